"""Small readers of an evaluation's output directory."""
import json
from pathlib import Path


def lines(out, name="generations.jsonl") -> list[str]:
    return (Path(out) / name).read_text().splitlines()


def records(out, name="generations.jsonl") -> list[dict]:
    return [json.loads(x) for x in lines(out, name)]


def keys(out) -> list[tuple]:
    return [(r["benchmark"], r["problem"], r["sample"]) for r in records(out)]


def results(out) -> dict:
    return json.loads((Path(out) / "results.json").read_text())


def texts(out) -> dict:
    return {(r["benchmark"], r["problem"], r["sample"]): r["text"] for r in records(out)}
