"""The throughput benchmark (`infolens perf`): how fast infolens runs against raw ONNX Runtime on the same model and
batch, apart from the faithfulness benchmark (`infolens eval benchmark`, evaluate/), which asks whether the maps are
right.  throughput.py: forwards per second inside an explanation against raw, the GPU table, the paper's setting,
the options' effect on the maps; startup.py: the short job as a user runs it, start-up included, and its fixed
costs apart; memory.py: peak memory against the number of positions; mipin.py: MIP-IN maps per second;
resnet50.py: the heavier classifier the table and the tests build."""
