"""The classifier: any ONNX image classifier as a function from uint8 RGB images to class probabilities.

Rooms: card.py (the model card and the `Preprocessing` value it declares), outputs.py (what the output holds and
how it becomes probabilities), session.py (opening the graph, batch relaxation), model.py (`OnnxClassifier`:
forwards, probabilities, the float16 check), taps.py (inner tensors as extra outputs).
"""
from .card import Preprocessing
from .model import OnnxClassifier
from .outputs import Output, to_probs
from .taps import Tapped

__all__ = ["OnnxClassifier", "Output", "Preprocessing", "Tapped", "to_probs"]
