"""Quality control against measurements, end to end: an LMM server of this test's own (real HTTP on
127.0.0.1, spoken to by the `openai` client) answers every request about the bundled iSAID tiles correctly,
or with one error of a known class injected at a known object; describe's flags must find each class
(recall and precision of its flag ≥ 0.95) and never flag a correct answer.

The server knows each object through the mask the request carries (``geopixeld_facts.mask_rle``) and
answers from the prepared tables (instances.parquet, clusters.parquet) and the colour of the mask's pixels
in the image it was sent (the set-of-marks tile minus the mark, or the clean tile for groups).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline import priors, vocab
from pipeline.colour import colour_shares
from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe
from pipeline.lmm.offline import decode_image, masked_pixels
from pipeline.prepare import prepare
from pipeline.rle import merge

#: The flag each injected error class must raise.
CLASS_CODE = {
    "count": "count_mismatch",
    "plural": "plural_mismatch",
    "orientation": "orientation_contradiction",
    "size": "size_contradiction",
    "metres": "metres_contradiction",
    "colour": "colour_contradiction",
    "absent": "absent_category",
    "position": "position_contradiction",
}
#: Flags about the object itself or the caption as a whole, not about the truth of one answer: a correct
#: answer may carry them (the oracle writes from templates, so two alike objects of a tile can get the same
#: sentence, which ``repeated_sentence`` rightly points out).
OBJECT_FLAGS = {"mostly_cut_off", "repeated_sentence"}
WRONG_COLOURS = ("red", "blue", "green", "yellow", "purple", "white", "black", "pink")
ADVERB = {"horizontal": "horizontally", "vertical": "vertically"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The bundled iSAID images with a GSD of 0.5 m/px (iSAID carries none), so sizes are in metres."""
    out = tmp_path_factory.mktemp("quality")
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid", gsd=0.5), out, progress=False)
    return out


@pytest.fixture(scope="module")
def prepared_dense(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The same with large vehicles grouped where three or more stand together (many groups to count)."""
    out = tmp_path_factory.mktemp("quality_dense")
    clusters = {"small vehicle": "only", "large vehicle": "dense"}
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid", gsd=0.5, cluster_categories=clusters), out, progress=False)
    return out


@dataclass
class Subject:
    """One object (or group) the server may be asked about, from the prepared tables."""

    tile_id: str
    kind: str  # instance | cluster
    category: str
    instance_ids: tuple[int, ...]
    position: str
    rows: list[dict[str, Any]]
    tile_categories: frozenset[str]

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return self.tile_id, self.instance_ids


@dataclass
class Oracle:
    """Answers from the tables, with injected errors; remembers what it injected where."""

    subjects: dict[str, Subject]  # mask RLE counts -> subject
    labels: frozenset[str]
    inject: bool = True
    judge_disagrees: float = 0.0  # share of objects the second-opinion model contradicts
    compose_adds: str | None = None  # a category the compose answer adds to about half of the paragraphs
    lock: threading.Lock = field(default_factory=threading.Lock)
    injected: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)
    contradicted: set[tuple[str, tuple[int, ...]]] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)

    def answer(self, model: str, facts: dict[str, Any], image_png: bytes | None) -> str:
        tier = facts.get("tier")
        with self.lock:
            self.requests[f"{model}:{tier}"] += 1
        if tier == "holistic":
            counts = facts.get("category_counts") or {}
            listing = vocab.join_words([vocab.counted(int(n), c) for c, n in sorted(counts.items())])
            return f"An aerial scene showing {listing or 'open ground'}, seen from above in daylight."
        if tier == "compose":
            texts = [str(x["text"]).rstrip(".") + "." for x in facts.get("sentences") or []]
            para = " ".join(texts)
            if self.compose_adds and int(hashlib.sha256(para.encode()).hexdigest()[:8], 16) % 2:
                para += f" {vocab.article(self.compose_adds).capitalize()} {self.compose_adds} waits nearby."
            return para
        s = self.subjects.get((facts.get("mask_rle") or {}).get("counts", ""))
        if s is None:  # a group formed at describe time (geopixeld policy): answer from the request's facts
            n = int(facts["count"])
            lead = "is a single" if n == 1 else f"are {_count_phrase(n)}"
            return f"There {lead} {facts['category']} {vocab.place(facts['position'])}, seen from above."
        colour = _colour(s, facts, image_png)
        h = int(hashlib.sha256(repr(s.key).encode()).hexdigest()[:8], 16)
        if model == "judge":
            return self._judge(s, colour, h)
        cls = self._pick(s, colour, h) if self.inject else "correct"
        with self.lock:
            self.injected[s.key] = cls
        return _cluster_text(s, colour, cls, h) if s.kind == "cluster" else _instance_text(s, colour, cls, h, self.labels)

    def _pick(self, s: Subject, colour: dict[str, Any], h: int) -> str:
        options = ["correct", "correct", "correct", "absent"]
        if colour["wrong"]:
            options.append("colour")
        if s.kind == "cluster":  # few groups and few small objects on this sample: inject there more often
            options += ["count"] * 8 if len(s.instance_ids) > 1 else []
        else:
            r = s.rows[0]
            options += ["plural"]
            if (r["elongation"] or 0) >= 1.6 and r["orientation_deg"] is not None and s.category not in ("storage tank", "roundabout"):
                options += ["orientation"]
            if r["size_class"] in ("small", "large"):
                options += ["size"] * 12
            if r["length_m"]:
                options += ["metres"]
            if r["position"] != "center" and r["position"] not in ("top", "bottom"):
                options += ["position"]
        return options[h % len(options)]

    def _judge(self, s: Subject, colour: dict[str, Any], h: int) -> str:
        """The second-opinion model: a correct answer in other words, or one contradicting the first."""
        contradict = (h >> 8) % 1000 < self.judge_disagrees * 1000 and bool(colour["wrong"] and colour["right"])
        if contradict:
            with self.lock:
                self.contradicted.add(s.key)
        word = colour["wrong"] if contradict else colour["right"]
        noun = s.category if s.kind == "instance" else vocab.plural(s.category, len(s.instance_ids))
        lead = "one" if s.kind == "instance" else _count_phrase(len(s.instance_ids))
        tone = f" {word}" if word else ""
        return f"Seen from above, {lead}{tone} {noun} stands out {vocab.place(s.position)} of this image."


def _colour(s: Subject, facts: dict[str, Any], image_png: bytes | None) -> dict[str, Any]:
    """The right colour word (the measured top name's last word, when it clearly dominates) and a wrong one
    (a word whose whole family is absent from the mask's pixels and shares no name with the right one's)."""
    pixels = masked_pixels(decode_image(image_png), facts, exclude_mark=s.kind == "instance")
    shares = dict(colour_shares(pixels)) if pixels is not None else {}
    right = None
    if shares:
        top = max(shares, key=lambda n: shares[n])
        word = top.split()[-1]
        if sum(shares.get(n, 0.0) for n in vocab.COLOUR_WORDS[word]) >= 0.2:
            right = word
    family = vocab.COLOUR_WORDS[right] if right else frozenset()
    wrong = next((w for w in WRONG_COLOURS if shares and not any(shares.get(n, 0.0) for n in vocab.COLOUR_WORDS[w])
                  and not vocab.COLOUR_WORDS[w] & family), None)
    return {"right": right, "wrong": wrong}


def _count_phrase(n: int) -> str:
    return "a single" if n == 1 else vocab.number_word(n) if n <= 9 else {True: "many", False: "numerous"}[n <= 20]


def _orientation_clause(r: dict[str, Any]) -> str:
    word = r["orientation_word"]
    if not word:
        return ""
    main, _, detail = word.partition(",")
    if main in ADVERB:
        return f", lying {ADVERB[main]}"
    return f", oriented diagonally, {detail.strip()}"


def _wrong_orientation(angle: float) -> str:
    """The wording nearest the perpendicular of ``angle`` (≥ 67.5° away from it)."""
    perp = (angle + 90.0) % 180.0
    words = {0.0: "lying horizontally", 45.0: "rising to the right", 90.0: "lying vertically",
             135.0: "falling to the right", 180.0: "lying horizontally"}
    return words[min(words, key=lambda a: abs(a - perp))]


def _instance_text(s: Subject, colour: dict[str, Any], cls: str, h: int, labels: frozenset[str]) -> str:
    r = s.rows[0]
    cat = s.category
    tone = f"{colour['right']} " if colour["right"] else ""
    size = {"small": "small ", "large": "large "}.get(r["size_class"], "") if "vehicle" not in cat else ""
    where = vocab.place(r["position"])
    orient = _orientation_clause(r)
    metres = f", about {r['length_m']:.1f} m long and {r['width_m']:.1f} m wide" if r["length_m"] else ""
    idiom = ""
    if "left" in r["position"]:
        idiom = " right next to its neighbours"  # "right" in the left column: an idiom, not a position
    elif "right" in r["position"]:
        idiom = ", as if left behind"  # "left" in the right column: a verb
    if cls == "plural":
        return f"Two {tone}{vocab.plural(cat)} are parked {where}{metres}."
    if cls == "orientation":
        orient = ", " + _wrong_orientation(float(r["orientation_deg"]))
    elif cls == "size":
        size = "huge " if r["size_class"] == "small" else "tiny "
        size = size if "vehicle" not in cat else ""
        if not size:  # the category's own name carries a size: say it after it
            return f"The {tone}{cat} is {'huge' if r['size_class'] == 'small' else 'tiny'} {where}{orient}{metres}."
    elif cls == "metres":
        metres = f", about {3 * r['length_m']:.0f} m long"
    elif cls == "colour":
        tone = f"{colour['wrong']} "
    elif cls == "absent":
        absent = sorted(labels - s.tile_categories)[h % len(labels - s.tile_categories)]
        idiom = f" right next to {vocab.article(absent)} {absent}"
    elif cls == "position":
        side = "right" if "left" in r["position"] else "left"
        where = f"on the {side} side of the image"
        idiom = ""
    head = f"{vocab.article(size + tone + cat)} {size}{tone}{cat}"
    templates = [
        f"{head[0].upper()}{head[1:]} sits {where}{idiom}{orient}{metres}.",
        f"{where[0].upper()}{where[1:]}, there is {head}{idiom}{orient}{metres}.",
    ]
    return templates[(h >> 4) % len(templates)]


def _cluster_text(s: Subject, colour: dict[str, Any], cls: str, h: int) -> str:
    n = len(s.instance_ids)
    noun = vocab.plural(s.category, n)
    tone = f"mostly {colour['right']}" if colour["right"] else ""
    # right: a number word, digits, or prepare's count word ("a few" for 3-5, "several" for 6-10, ...)
    lead = [_count_phrase(n), str(n) if n > 1 else "a single", priors.count_word(n)][(h >> 12) % 3]
    tail = " right next to each other" if n > 1 else ""
    if cls == "count":  # wrong: each clearly outside what fits n
        wrong = ["a single", "two" if n >= 4 else "dozens of", str(3 * n), "dozens of" if n < 15 else "a few"]
        lead = wrong[(h >> 12) % len(wrong)]
        noun = s.category if lead == "a single" else vocab.plural(s.category)
    elif cls == "colour":
        tone = f"mostly {colour['wrong']}"
    elif cls == "absent":
        absent = "helicopter" if "helicopter" not in s.tile_categories else "roundabout"
        tail = f" right next to a {absent}"
    where = vocab.place(s.position) or "in the image"
    verb = "is" if lead == "a single" else "are"
    text = f"There {verb} {lead} {noun} {where}{tail}"
    return text + (f", {tone} in colour." if tone else ".")


@contextmanager
def oracle_server(oracle: Oracle) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            image = None
            for part in body["messages"][0]["content"]:
                if part.get("type") == "image_url":
                    image = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
            try:
                text = oracle.answer(body["model"], body.get("geopixeld_facts") or {}, image)
                status = 200
                payload = {
                    "id": "q", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": len(text.split()), "total_tokens": 100},
                }
            except Exception as exc:  # a bug in the oracle must fail the test loudly, not look like a flaky LMM
                status, payload = 400, {"error": {"message": f"oracle: {exc!r}", "type": "invalid_request_error"}}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _oracle(data: Path, **kw: Any) -> Oracle:
    instances = pq.read_table(data / "instances.parquet").to_pylist()
    clusters = pq.read_table(data / "clusters.parquet").to_pylist()
    by_tile: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in instances:
        by_tile[r["tile_id"]].append(r)
    cats = {t: frozenset(r["category_name"] for r in rows) for t, rows in by_tile.items()}
    subjects: dict[str, Subject] = {}
    for r in instances:
        if r["mark"] is not None:
            subjects[r["rle"]["counts"]] = Subject(r["tile_id"], "instance", r["category_name"], (r["instance_id"],),
                                                   r["position"], [r], cats[r["tile_id"]])
    by_id = {(r["tile_id"], r["instance_id"]): r for r in instances}
    for c in clusters:
        rows = [by_id[(c["tile_id"], i)] for i in c["instance_ids"]]
        mask = merge([m["rle"] for m in rows])
        subjects[mask["counts"]] = Subject(c["tile_id"], "cluster", c["category_name"], tuple(c["instance_ids"]),
                                           c["position"], rows, cats[c["tile_id"]])
    labels = vocab.label_set(frozenset(r["category_name"] for r in instances))
    return Oracle(subjects, labels, **kw)


def _fresh(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    return dst


def _flags_by_subject(data: Path) -> tuple[dict[tuple[str, tuple[int, ...]], list[dict[str, Any]]], list[dict[str, Any]]]:
    """Flags about one object keyed like the oracle's subjects (tile, instance ids), and the samples."""
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    out: dict[tuple[str, tuple[int, ...]], list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        for f in s["flags"]:
            if f["instance_ids"]:
                out[(s["tile_id"], tuple(f["instance_ids"]))].append(f)
    return out, samples


def _run_liar(data: Path) -> tuple[Oracle, dict[tuple[str, tuple[int, ...]], list[dict[str, Any]]], list[dict[str, Any]]]:
    """Describe ``data`` through the oracle with injected errors: the oracle, object flags, samples."""
    oracle = _oracle(data)
    with oracle_server(oracle) as url:
        cfg = DescribeConfig(base_url=url, model="liar", concurrency=4, policy="all-instances", max_retries=0)
        summary = describe(data, cfg, progress=False)
    assert summary.lmm["failed"] == 0
    assert len(oracle.injected) == len(oracle.subjects)  # every object was asked about once
    by_subject, samples = _flags_by_subject(data)
    return oracle, by_subject, samples


def test_each_injected_error_class_is_flagged(tmp_path: Path, prepared: Path, prepared_dense: Path) -> None:
    injected: dict[tuple[str, str, tuple[int, ...]], str] = {}
    by_subject: dict[tuple[str, str, tuple[int, ...]], list[dict[str, Any]]] = {}
    all_samples: list[dict[str, Any]] = []
    for name, src in (("default", prepared), ("dense", prepared_dense)):  # dense: many more groups to count
        oracle, flags, samples = _run_liar(_fresh(src, tmp_path / name))
        injected.update({(name, *k): c for k, c in oracle.injected.items()})
        by_subject.update({(name, *k): v for k, v in flags.items()})
        all_samples += samples
    classes = Counter(injected.values())
    report = {}
    for cls, code in CLASS_CODE.items():
        truth = {k for k, c in injected.items() if c == cls}
        flagged = {k for k, fs in by_subject.items() if any(f["code"] == code for f in fs)}
        assert len(truth) >= 10, f"too few {cls} errors injected ({classes})"
        recall = len(truth & flagged) / len(truth)
        precision = len(truth & flagged) / len(flagged) if flagged else 0.0
        report[cls] = (len(truth), round(recall, 3), round(precision, 3))
    print("\nclass: injected, recall, precision", json.dumps(report), "of", len(injected), "answers")
    for cls, (_, recall, precision) in report.items():
        assert recall >= 0.95 and precision >= 0.95, (cls, report[cls], report)
    # No flag on correct answers (beyond what the object itself earns, e.g. mostly cut off).
    correct = [k for k, c in injected.items() if c == "correct"]
    assert len(correct) >= 0.3 * len(injected)
    wrongly = {k: [f["code"] for f in by_subject.get(k, []) if f["code"] not in OBJECT_FLAGS] for k in correct}
    assert not {k: v for k, v in wrongly.items() if v}
    # Holistic answers are correct: no sample-level flag from them; every object flag names its phrase.
    for s in all_samples:
        assert not [f for f in s["flags"] if f["detail"].startswith("holistic")]
        for f in s["flags"]:
            if f["instance_ids"] and f["code"] != "not_grounded":
                ph = s["phrases"][f["phrase"]]
                assert sorted(ph["instance_ids"]) == sorted(f["instance_ids"])
        assert 0.0 <= s["review_score"] < 1.0
        assert (s["review_score"] > 0) == bool(s["flags"])
    # A sample with an error-severity flag needs review more than any unflagged one.
    worst = [s["review_score"] for s in all_samples if s["max_severity"] == "error"]
    clean = [s["review_score"] for s in all_samples if not s["flags"]]
    assert worst and min(worst) > max(clean, default=0.0)


def test_second_opinion_flags_disagreement(tmp_path: Path, prepared: Path) -> None:
    data = _fresh(prepared, tmp_path / "d")
    oracle = _oracle(data, inject=False, judge_disagrees=0.3)
    with oracle_server(oracle) as url:
        cfg = DescribeConfig(base_url=url, model="honest", second_opinion="judge", concurrency=4,
                             policy="all-instances", max_retries=0)
        summary = describe(data, cfg, progress=False)
    n_objects = len(oracle.subjects)
    assert oracle.requests["judge:instance"] + oracle.requests["judge:cluster"] == n_objects  # every object, twice
    assert summary.lmm["calls"] == sum(oracle.requests.values())  # the second opinion's calls are logged too
    by_subject, samples = _flags_by_subject(data)
    flagged = {k for k, fs in by_subject.items() if any(f["code"] == "second_opinion_disagreement" for f in fs)}
    assert oracle.contradicted and flagged == oracle.contradicted
    assert all("agreement" in f["detail"] for fs in by_subject.values() for f in fs
               if f["code"] == "second_opinion_disagreement")
    # Correct answers (inject=False) earn no flag of the measured checks.
    codes = {f["code"] for fs in by_subject.values() for f in fs} - OBJECT_FLAGS
    assert codes <= {"second_opinion_disagreement"}, codes
    # Agreement lowers the review score only where the second opinion disagrees.
    disagreeing = {s["tile_id"] for s in samples if any(f["code"] == "second_opinion_disagreement" for f in s["flags"])}
    for s in samples:
        if s["tile_id"] in disagreeing:
            assert s["review_score"] >= 0.3


def test_second_opinion_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DescribeConfig(samples=2, temperature=0.0)
    with pytest.raises(ValueError, match="not both"):
        DescribeConfig(samples=2, second_opinion="judge")
    with pytest.raises(ValueError, match="--batch"):
        DescribeConfig(second_opinion="judge", batch=True, base_url="http://127.0.0.1:1/v1")


def test_compose_adding_an_absent_category_is_flagged(tmp_path: Path, prepared: Path) -> None:
    data = _fresh(prepared, tmp_path / "d")
    oracle = _oracle(data, inject=False, compose_adds="helicopter")
    assert "helicopter" in oracle.labels and "helicopter" not in {s.category for s in oracle.subjects.values()}
    with oracle_server(oracle) as url:
        summary = describe(data, DescribeConfig(base_url=url, model="honest", concurrency=4, max_retries=0),
                           progress=False)
    assert summary.lmm["failed"] == 0 and oracle.requests["honest:compose"] > 0
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    added = [s for s in samples if "helicopter" in s["caption"]]
    assert added and len(added) < len(samples)
    for s in samples:
        compose = [f for f in s["flags"] if f["detail"].startswith("compose:")]
        assert [f["code"] for f in compose] == (["absent_category"] if s in added else [])
        assert all(f["phrase"] is None and not f["instance_ids"] for f in compose)  # sample-level
        # the first-round answers were correct: nothing else about them is flagged
        assert {f["code"] for f in s["flags"]} - {"absent_category"} - OBJECT_FLAGS == set(), s["flags"]


def test_two_samples_of_the_offline_describer_agree(tmp_path: Path, prepared: Path) -> None:
    """``--samples 2`` with the embedded describer: the second sample is worded differently (its facts differ
    by the sample number, so the cache key and the describer's seeded wording do) but says the same."""
    data = _fresh(prepared, tmp_path / "d")
    summary = describe(data, DescribeConfig(samples=2, temperature=0.7, concurrency=4), progress=False)
    calls = pq.read_table(data / "lmm_calls.parquet", columns=["ref", "text"]).to_pylist()
    second = [c for c in calls if c["ref"].endswith("|second")]
    assert second and summary.lmm["failed"] == 0
    firsts = {c["ref"]: c["text"] for c in calls}
    assert any(firsts[c["ref"].removesuffix("|second")] != c["text"] for c in second)  # other words
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    assert not [f for s in samples for f in s["flags"] if f["code"] == "second_opinion_disagreement"]
