"""The data pipeline: Amazon/table/synthetic sources, recipes, leak-free splits, determinism and bad input.

Every raw file is written into ``tmp_path`` by the helpers below; nothing reads ``../shared``.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhan.cli import main
from dhan.data.amazon import _parse_meta_line, _record_from_dict, department_name
from dhan.data.prepare import PrepareOptions, prepare
from dhan.data.store import PreparedData
from dhan.data.synthetic import GeneratorParams, generate
from dhan.schema import UNKNOWN_ID

# ------------------------------------------------------------------------------------------- fixtures


def _reviews(n_users: int = 12, n_items: int = 30, seed: int = 0) -> list[dict[str, object]]:
    """Users with 3..9 distinct items each, times with ties; no user owns every item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(3, 10))
        items = rng.choice(n_items, size=n, replace=False)
        t = 1_300_000_000 + np.cumsum(rng.integers(0, 3, size=n)) * 86_400
        for i, ti in zip(items, t, strict=True):
            rows.append(
                {"reviewerID": f"U{u:03d}", "asin": f"A{int(i):04d}", "overall": 5.0, "unixReviewTime": int(ti)}
            )
    order = rng.permutation(len(rows))  # dumps are not sorted by user
    return [rows[k] for k in order]


def _meta_2014(n_items: int = 30, missing: tuple[int, ...] = ()) -> list[str]:
    lines = []
    for i in range(n_items):
        if i in missing:
            continue
        rec = {
            "asin": f"A{i:04d}",
            "title": "Kid's toy" if i % 3 == 0 else f"Toy {i}",  # an apostrophe makes repr use double quotes
            "price": float(i + 1),
            "related": {"also_bought": [f"A{(i + 1) % n_items:04d}"]},
            "salesRank": {"Toys & Games": 100 + i},
            "categories": [["Toys & Games", f"Group {i % 2}", f"Leaf {i % 4}"]],
        }
        if i % 2:
            rec["brand"] = f"Brand {i % 5}"
        lines.append(repr(rec))
    return lines


def _meta_2018(n_items: int = 30) -> list[str]:
    return [
        json.dumps(
            {
                "asin": f"A{i:04d}",
                "category": ["Toys & Games", f"Group {i % 2}", f"Leaf {i % 4}"],
                "brand": f"Brand {i % 5}",
                "price": f"${i + 1}.99" if i % 4 else "",
                "also_buy": [],
            }
        )
        for i in range(n_items)
    ]


def _write(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _amazon_files(tmp: Path, gz: bool = False, meta: str = "2014") -> tuple[Path, Path]:
    ext = ".json.gz" if gz else ".json"
    r = _write(tmp / f"reviews_Toys_and_Games_5{ext}", [json.dumps(x) for x in _reviews()])
    m = _write(tmp / f"meta_Toys_and_Games{ext}", _meta_2014() if meta == "2014" else _meta_2018())
    return r, m


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _prepare_amazon(tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str, **files: Path) -> PreparedData:
    r, m = files.get("reviews"), files.get("meta")
    if r is None or m is None:
        r, m = _amazon_files(tmp)
    out = tmp / "out"
    code, _, err = _run(["prepare", "amazon", "--reviews", str(r), "--meta", str(m), "--out", str(out), *extra], capsys)
    assert code == 0, err
    return PreparedData.load(out)


# ------------------------------------------------------------------------------------------- leakage


def assert_leak_free(data: PreparedData, distinct_items: bool = True) -> None:
    """The guarantees of docs/data.md, checked sample by sample."""
    off, items, times = data.offsets, data.hist_item, data.hist_time
    owned = {u: set(items[off[u] : off[u + 1]].tolist()) for u in range(len(off) - 1)}
    for u in range(len(off) - 1):  # histories in time order; hist_neg never an item of the user
        assert np.all(np.diff(times[off[u] : off[u + 1]]) >= 0)
        assert not owned[u] & set(data.hist_neg[off[u] : off[u + 1]].tolist())
    last_train: dict[int, tuple[int, int]] = {}
    for split in ("train", "valid", "test"):
        s = data.split(split)
        assert np.all(s.position >= 1)
        assert np.all(s.position < np.diff(off)[s.user])
        for u, p, t, y in zip(s.user, s.position, s.target, s.label, strict=True):
            row = off[u] + p
            hist = items[off[u] : row]
            if y == 1:
                assert items[row] == t  # the target is the behaviour right after the history
            else:
                assert t not in owned[int(u)]  # a negative is never an item of that user
            if distinct_items:
                assert t not in set(hist.tolist())  # no history contains its target
            if split == "train":
                prev = last_train.get(int(u), (0, -1))
                last_train[int(u)] = (max(prev[0], int(p)), max(prev[1], int(times[row])))
            elif int(u) in last_train:
                assert p > last_train[int(u)][0]  # valid/test targets come after every train target
                assert times[row] >= last_train[int(u)][1]


def test_din_recipe_on_amazon_is_leak_free(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepare_amazon(tmp_path, capsys)
    assert_leak_free(data)
    lengths = np.diff(data.offsets)
    splits = data.schema.info["splits"]
    assert splits["test"] == 2 * int((lengths >= 2).sum())
    assert splits["valid"] == 2 * int((lengths >= 3).sum())
    assert splits["train"] == 2 * int(np.maximum(lengths - 3, 0).sum())
    # one positive and one negative per target, with the same history
    train = data.split("train")
    assert np.array_equal(train.label[::2], np.ones(len(train) // 2))
    assert not train.label[1::2].any()
    assert np.array_equal(train.position[::2], train.position[1::2])


def test_synthetic_is_leak_free_and_hierarchical() -> None:
    raw = generate(GeneratorParams(users=60, items=400, seed=3))
    data, summary = prepare(raw, PrepareOptions(seed=3))
    assert_leak_free(data)
    assert [a.name for a in data.schema.attributes] == [
        "category",
        "category_parent",
        "category_grandparent",
        "brand",
        "price_band",
    ]
    assert summary["users"] == 60
    # every leaf has one parent: the tree is a real hierarchy
    pairs = {tuple(r) for r in data.item_attrs[2:, :2].tolist()}
    assert len({leaf for leaf, _ in pairs}) == len(pairs)
    assert data.schema.info["generator"]["users"] == 60


def test_paper_split_has_no_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepare_amazon(tmp_path, capsys, "--split", "paper")
    assert len(data.split("valid")) == 0
    assert data.schema.info["splits"]["test"] == 2 * int((np.diff(data.offsets) >= 2).sum())
    assert_leak_free(data)


def test_dien_recipe_properties(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepare_amazon(tmp_path, capsys, "--recipe", "dien", "--valid-fraction", "0.2", "--test-fraction", "0.2")
    lengths = np.diff(data.offsets)
    assert lengths.min() >= 5  # users with at least 5 interactions
    users_by_split = {}
    for split in ("train", "valid", "test"):
        s = data.split(split)
        assert np.array_equal(s.position, lengths[s.user] - 1)  # the last behaviour, whole earlier history
        assert np.array_equal(np.unique(s.user, return_counts=True)[1], np.full(len(set(s.user)), 2))  # one pair
        users_by_split[split] = set(s.user.tolist())
    assert not users_by_split["train"] & users_by_split["valid"]
    assert not users_by_split["train"] & users_by_split["test"]
    assert not users_by_split["valid"] & users_by_split["test"]
    assert sum(map(len, users_by_split.values())) == data.schema.num_users
    assert_leak_free(data)


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_other_seed_other_negatives(tmp_path: Path) -> None:
    def files(seed: int, name: str) -> dict[str, bytes]:
        out = tmp_path / name
        code = main(["prepare", "synthetic", "--users", "50", "--items", "300", "--seed", str(seed), "--out", str(out)])
        assert code == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    a, b, c = files(7, "a"), files(7, "b"), files(8, "c")
    assert a == b
    neg_a = pl.read_parquet(tmp_path / "a" / "interactions.parquet")["neg_item"].to_numpy()
    neg_c = pl.read_parquet(tmp_path / "c" / "interactions.parquet")["neg_item"].to_numpy()
    assert a.keys() == c.keys()
    assert len(neg_a) != len(neg_c) or not np.array_equal(neg_a, neg_c)


def test_other_seed_other_negatives_same_histories(tmp_path: Path) -> None:
    raw_r, raw_m = _amazon_files(tmp_path)
    from dhan.data.amazon import read_amazon

    raw = read_amazon([raw_r], [raw_m])
    d1, _ = prepare(raw, PrepareOptions(seed=1))
    d2, _ = prepare(raw, PrepareOptions(seed=2))
    assert np.array_equal(d1.hist_item, d2.hist_item)
    assert not np.array_equal(d1.hist_neg, d2.hist_neg)
    assert_leak_free(d2)


# ------------------------------------------------------------------------------------------- amazon formats


def test_amazon_2014_plain_and_gz_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    r1, m1 = _amazon_files(tmp_path / "plain", gz=False)
    r2, m2 = _amazon_files(tmp_path / "gz", gz=True)
    a = _prepare_amazon(tmp_path / "plain", capsys, reviews=r1, meta=m1)
    b = _prepare_amazon(tmp_path / "gz", capsys, reviews=r2, meta=m2)
    assert np.array_equal(a.item_attrs, b.item_attrs)
    assert np.array_equal(a.hist_neg, b.hist_neg)
    assert a.attribute_values == b.attribute_values
    assert a.schema.info["meta_formats"][str(m1)]["python-literal"] == 30
    assert [s["sha256"] for s in a.schema.info["sources"]] != [s["sha256"] for s in b.schema.info["sources"]]
    # levels from the path (leaf first), brand, price bands; 2014 categories are the last path's elements
    assert a.schema.attribute_names == ("category", "category_parent", "category_grandparent", "brand", "price_band")
    assert a.attribute_values["category"][2:] == ["Leaf 0", "Leaf 1", "Leaf 2", "Leaf 3"]
    assert a.attribute_values["category_grandparent"][2:] == ["Toys & Games"]
    item = a.item_raw_ids.index("A0000")
    assert a.attribute_values["brand"][a.item_attrs[item, 3]] == "<unknown>"  # even asins have no brand


def test_amazon_2018_meta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r, m = _amazon_files(tmp_path, gz=True, meta="2018")
    data = _prepare_amazon(tmp_path, capsys, reviews=r, meta=m)
    assert data.schema.info["meta_formats"][str(m)] == {"python-literal": 0, "json": 30}
    assert data.schema.num_categories == 4
    price_col = data.schema.attribute_index("price_band")
    item = data.item_raw_ids.index("A0000")  # price "" -> unknown band
    assert data.item_attrs[item, price_col] == UNKNOWN_ID
    assert data.schema.attribute("brand").num_values == 5


def test_category_level_and_min_category_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepare_amazon(tmp_path, capsys, "--category-level", "1")
    assert data.attribute_values["category"][2:] == ["Group 0", "Group 1"]
    assert data.schema.attribute_names[:2] == ("category", "category_parent")
    assert "category_grandparent" not in data.schema.attribute_names
    sizes = np.bincount(_prepare_amazon(tmp_path, capsys).item_attrs[2:, 0])
    keep = int(sizes[sizes > 0].max())
    filtered = _prepare_amazon(tmp_path, capsys, "--min-category-items", str(keep))
    assert filtered.schema.num_categories == int((sizes >= keep).sum())
    assert filtered.schema.info["counts"]["categories_dropped"] == int(((sizes > 0) & (sizes < keep)).sum())


def test_items_without_meta_get_unknown_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _write(tmp_path / "reviews.json", [json.dumps(x) for x in _reviews()])
    m = _write(tmp_path / "meta.json", _meta_2014(missing=tuple(range(0, 30, 3))))
    data = _prepare_amazon(tmp_path, capsys, reviews=r, meta=m)
    for raw_id in ("A0000", "A0003"):
        if raw_id in data.item_raw_ids:
            assert data.item_attrs[data.item_raw_ids.index(raw_id), 0] == UNKNOWN_ID


def test_category_from_source_several_departments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r1 = _write(tmp_path / "reviews_Video_Games_5.json.gz", [json.dumps(x) for x in _reviews(seed=1)])
    rows = [{**x, "asin": "B" + str(x["asin"])[1:]} for x in _reviews(seed=2)]
    r2 = _write(tmp_path / "reviews_CDs_and_Vinyl_5.json", [json.dumps(x) for x in rows])
    m1 = _write(tmp_path / "meta_Video_Games.json", _meta_2014())
    m2 = _write(tmp_path / "meta_CDs_and_Vinyl.json", _meta_2014())
    out = tmp_path / "six"
    args = ["prepare", "amazon", "--category-from", "source", "--out", str(out)]
    code, _, err = _run(
        [*args, "--reviews", str(r1), "--meta", str(m1), "--reviews", str(r2), "--meta", str(m2)], capsys
    )
    assert code == 0, err
    data = PreparedData.load(out)
    assert data.attribute_values["category"][2:] == ["CDs and Vinyl", "Video Games"]
    assert department_name(Path("reviews_Apps_for_Android_5.json.gz")) == "Apps for Android"


def test_duplicates_dropped_and_ties_keep_file_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"reviewerID": "U1", "asin": "A3", "unixReviewTime": 10},
        {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 10},
        {"reviewerID": "U1", "asin": "A3", "unixReviewTime": 10},  # exact duplicate
        {"reviewerID": "U1", "asin": "A2", "unixReviewTime": 5},
        {"reviewerID": "U2", "asin": "A9", "unixReviewTime": 1},
        {"reviewerID": "U2", "asin": "A8", "unixReviewTime": 2},
    ]
    r = _write(tmp_path / "r.json", [json.dumps(x) for x in rows])
    m = _write(tmp_path / "m.json", _meta_2014())
    data = _prepare_amazon(tmp_path, capsys, reviews=r, meta=m)
    assert data.schema.info["duplicates_dropped"] == 1
    u1 = [data.item_raw_ids[i] for i in data.hist_item[data.offsets[0] : data.offsets[1]]]
    assert u1 == ["A2", "A3", "A1"]


def test_sample_users_is_seeded_and_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _prepare_amazon(tmp_path, capsys, "--sample-users", "0.5", "--seed", "4")
    b = _prepare_amazon(tmp_path, capsys, "--sample-users", "0.5", "--seed", "4")
    assert a.schema.num_users == 6
    assert a.user_raw_ids == b.user_raw_ids
    c = _prepare_amazon(tmp_path, capsys, "--sample-reviews", "0.5")
    assert c.schema.info["counts"]["rows_after_sample_reviews"] == round(0.5 * c.schema.info["counts"]["rows_read"])


# ------------------------------------------------------------------------------------------- 2014 meta parser


_text = st.text(alphabet=st.sampled_from(list("ab '\"\\é\n\t,:{}[]x")), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    title=_text,
    brand=st.one_of(st.none(), _text),
    price=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    paths=st.lists(st.lists(_text, min_size=1, max_size=3), max_size=3),
    extra=st.sampled_from([None, True, (1, 2), "u"]),
)
def test_meta_fast_paths_agree_with_literal_eval(title, brand, price, paths, extra) -> None:
    rec: dict[str, object] = {"asin": "X1", "title": title, "categories": paths, "related": {"also_bought": [title]}}
    if brand is not None:
        rec["brand"] = brand
    if price is not None:
        rec["price"] = price
    if extra is not None:
        rec["extra"] = extra
    line = repr(rec).encode()
    got, _ = _parse_meta_line(line, False, "last")
    want, _ = _record_from_dict(ast.literal_eval(line.decode()), "last")
    assert got == want


def test_meta_parser_never_evaluates_code() -> None:
    rec, problem = _parse_meta_line(b"__import__('os').system('false')", False, "last")
    assert rec is None
    assert "not a Python dict literal" in problem


# ------------------------------------------------------------------------------------------- table source


def test_table_with_category_path_and_brand_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inter = tmp_path / "log.tsv"
    rows = ["uid\tiid\tts"] + [f"{x['reviewerID']}\t{str(x['asin'])[1:]}\t{x['unixReviewTime']}" for x in _reviews()]
    inter.write_text("\n".join(rows) + "\n")
    items = pl.DataFrame(
        {
            "iid": [f"{i:04d}" for i in range(30)],
            "path": [f"Root > Mid {i % 2} > Leaf {i % 4}" if i % 7 else "" for i in range(30)],
            "maker": [f"M{i % 3}" for i in range(30)],
            "cost": [float(i) for i in range(30)],
        }
    )
    items.write_parquet(tmp_path / "items.parquet")
    out = tmp_path / "ds"
    code, stdout, err = _run(
        [
            "prepare", "table", "--interactions", str(inter), "--items", str(tmp_path / "items.parquet"),
            "--user-col", "uid", "--item-col", "iid", "--time-col", "ts", "--attribute", "category=path",
            "--category-sep", " > ", "--attribute", "brand=maker", "--attribute", "price=cost", "--out", str(out),
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "samples train" in stdout
    data = PreparedData.load(out)
    assert data.schema.attribute_names == ("category", "category_parent", "category_grandparent", "brand", "price_band")
    assert data.attribute_values["category_parent"][2:] == ["Mid 0", "Mid 1"]
    assert data.item_raw_ids[2:] == sorted(data.item_raw_ids[2:], key=int)  # numeric ids sort as numbers
    no_path = [data.item_raw_ids.index(str(i)) for i in (7, 14) if str(i) in data.item_raw_ids]
    assert all(data.item_attrs[k, 0] == UNKNOWN_ID for k in no_path)
    assert_leak_free(data)


def test_table_attributes_from_the_interactions_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inter = tmp_path / "log.csv"
    lines = ["user_id,item_id,time,cat"] + [
        f"{x['reviewerID']},{x['asin']},{x['unixReviewTime']},c{int(str(x['asin'])[1:]) % 3}" for x in _reviews()
    ]
    inter.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    code, _, err = _run(
        ["prepare", "table", "--interactions", str(inter), "--attribute", "category=cat", "--out", str(out)], capsys
    )
    assert code == 0, err
    data = PreparedData.load(out)
    assert data.schema.attribute_names == ("category",)
    assert data.schema.num_categories == 3


# ------------------------------------------------------------------------------------------- bad input


def _dirty_reviews(tmp: Path) -> Path:
    lines = [json.dumps(x) for x in _reviews()]
    lines.insert(2, "{not json")  # line 3
    lines.insert(4, "")  # blank: ignored
    lines.insert(6, json.dumps({"reviewerID": "U1", "unixReviewTime": 3}))  # line 7: no asin
    lines.insert(8, json.dumps({"reviewerID": "U1", "asin": "A0001", "unixReviewTime": "soon"}))  # line 9
    return _write(tmp / "reviews_dirty.json", lines)


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _dirty_reviews(tmp_path)
    m = _write(tmp_path / "meta.json", [*_meta_2014()[:5], "{'asin': 'A0099', 'title': 'broken", *_meta_2014()[5:]])
    out = tmp_path / "ds"
    code, stdout, _ = _run(["prepare", "amazon", "--reviews", str(r), "--meta", str(m), "--out", str(out)], capsys)
    assert code == 0
    skipped = json.loads((out / "schema.json").read_text())["skipped_lines"]
    assert skipped["count"] == 4
    assert skipped["files"][str(r)]["first_lines"] == [3, 7, 9]
    assert skipped["files"][str(m)]["first_lines"] == [6]
    assert "skipped lines 4" in stdout
    assert "first at lines [3, 7, 9]" in stdout
    assert PreparedData.load(out).schema.info["num_interactions"] == len(_reviews())


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("{not json", "not a valid JSON object"),
        (json.dumps({"reviewerID": "U1", "unixReviewTime": 3}), "asin"),
        (json.dumps({"reviewerID": "U1", "asin": "A1", "unixReviewTime": "soon"}), "not an integer"),
        (json.dumps({"asin": "A1", "unixReviewTime": 3}), "reviewerID"),
    ],
)
def test_strict_stops_at_first_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, what: str
) -> None:
    lines = [json.dumps(x) for x in _reviews()]
    lines.insert(3, line)
    r = _write(tmp_path / "reviews.json", lines)
    m = _write(tmp_path / "meta.json", _meta_2014())
    code, _, err = _run(
        ["prepare", "amazon", "--strict", "--reviews", str(r), "--meta", str(m), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert err.count("\n") == 1
    assert f"{r}:4:" in err
    assert what in err
    assert not (tmp_path / "o").exists()


def test_strict_table_reports_row_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "log.csv"
    f.write_text("user_id,item_id,time\nu1,i1,1\nu1,i2,x\nu1,,3\n")
    code, _, err = _run(
        ["prepare", "table", "--strict", "--interactions", str(f), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert f"{f}:3:" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("case", ["missing-reviews", "missing-meta", "empty", "only-bad", "no-users-left", "table-col"])
def test_user_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    r, m = _amazon_files(tmp_path)
    out = str(tmp_path / "o")
    base = ["prepare", "amazon", "--out", out]
    args = {
        "missing-reviews": [*base, "--reviews", str(tmp_path / "nope.json"), "--meta", str(m)],
        "missing-meta": [*base, "--reviews", str(r), "--meta", str(tmp_path / "nope.json")],
        "empty": [*base, "--reviews", str(_write(tmp_path / "e.json", [""])), "--meta", str(m)],
        "only-bad": [*base, "--reviews", str(_write(tmp_path / "b.json", ["{x", "[]"])), "--meta", str(m)],
        "no-users-left": [*base, "--reviews", str(r), "--meta", str(m), "--min-user-interactions", "1000"],
        "table-col": ["prepare", "table", "--interactions", str(_write(tmp_path / "t.csv", ["a,b,c", "1,2,3"])),
                      "--out", out],
    }[case]  # fmt: skip
    code, _, err = _run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("dhan prepare: error:")
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------- inspect


def test_inspect_prints_raw_ids_with_loader_truncation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepare_amazon(tmp_path, capsys, "--max-len", "2")
    code, out, _ = _run(["inspect", str(tmp_path / "out"), "--split", "test", "--limit", "4"], capsys)
    assert code == 0
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 4
    assert {r["label"] for r in rows} == {0, 1}
    s = data.split("test")
    u, p = int(s.user[0]), int(s.position[0])
    hist = data.hist_item[data.offsets[u] + max(0, p - 2) : data.offsets[u] + p]
    assert rows[0]["history"] == [data.item_raw_ids[i] for i in hist]
    assert rows[0]["user"] == data.user_raw_ids[u]
    assert len(rows[0]["history"]) <= 2
    assert len(rows[0]["history_categories"]) == len(rows[0]["history"])
    code, _, err = _run(["inspect", str(tmp_path / "missing")], capsys)
    assert code == 2
    assert err.count("\n") == 1
