"""`infolens models`: the shipped models and their cards."""
from __future__ import annotations

import json
import os


def register(sub) -> None:
    mo = sub.add_parser("models", help="list the shipped models and their cards",
                        description="List the shipped models (ONNX files with JSON cards) and their cards.")
    mo.set_defaults(run=lambda args: run(args.full))
    mo.add_argument("--full", action="store_true", help="print every card in full (JSON)")


def run(full: bool) -> int:
    from ..catalog import list_cards, models_dir

    cards = list_cards()
    if not cards:
        print(f"no shipped models in {models_dir()}")
        return 0
    for path, card in cards:
        print(f"{os.path.basename(path)}  {os.path.getsize(path) / 1e6:.1f} MB  {card.get('task', '(no card)')}")
        if full:
            print("  " + json.dumps(card, indent=2).replace("\n", "\n  "))
            continue
        for line in _card_lines(card):
            print("  " + line)
    print(f"({models_dir()}; `infolens models --full` prints the whole cards)")
    return 0


def _card_lines(card: dict) -> list[str]:
    lines = []
    if "input" in card and isinstance(card["input"], dict):
        i = card["input"]
        lines.append(f"input   {i.get('layout')} {'x'.join(map(str, i.get('size', [])))} {i.get('channel_order')} "
                     f"{i.get('dtype')}: (pixel*{i.get('scale')} - {i.get('mean')}) / {i.get('std')}, "
                     f"resize {i.get('resize')}")
    if "labels" in card:
        kind = card.get("output", {}).get("kind", "auto")
        lines.append(f"output  {kind}, {len(card['labels'])} labels ({', '.join(card['labels'][:3])}, …)")
    if "K" in card:
        nll = card.get("nll_bits_per_subpixel", {})
        head = card.get("head", "categorical")  # the first cards predate the key
        shape = f"M={card.get('M')} T={card.get('T')}" if head == "logistic_mixture" else f"width {card.get('width')}"
        lines.append(f"K={card['K']} {head} head, {shape}; held-out NLL {nll.get('patchsampler')} bits/sub-pixel "
                     f"(uniform {nll.get('uniform')}); {card.get('cost_ms_per_position')} ms per position")
    if card.get("task") == "mipin-inverse":
        r2 = card.get("r2", {})
        first = next(iter(r2.values()), None)
        lines.append(f"MIP-IN inverse of {card.get('classifier')}: map layer {card.get('map_layer')} "
                     f"{card.get('map_shape')}, {len(r2)} fitted tensors (held-out R² {first:.3f} at the top, "
                     f"{min(r2.values()):.3f} at worst); {card.get('crops')} crops" if r2 else "MIP-IN inverse")
    if card.get("task") == "removal-evaluator":
        t, h = card.get("training", {}), card.get("held_out", {})
        lines.append(f"removal evaluator of {card.get('classifier')}: fine-tuned {t.get('steps')} steps on "
                     f"{t.get('images')} crops with parts removed by {', '.join(t.get('fills', []))}; held-out top-1 "
                     f"agreement with the classifier {h.get('top1_agreement', float('nan')):.3f}")
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    command = source.get("command") or card.get("command")
    if command:
        licence = source.get("licence") or card.get("licence")
        lines.append(f"made by {command}" + (f"  [{licence}]" if licence else ""))
    return lines

