"""The lean tar reader gives exactly what WebDataset's own tar iteration gives."""

from __future__ import annotations

import io
import tarfile

import webdataset as wds

from emonet_dist.data.tario import iter_samples


def _wds_samples(url: str) -> list[dict]:
    out = []
    for s in wds.tariterators.tarfile_samples([{"url": url}]):
        out.append({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"})
    return out


def test_matches_webdataset_on_real_shards(tiny_shards):
    for shard in sorted(tiny_shards.glob("tiny/*/shard-*.tar")):
        with open(shard, "rb") as f:
            ours = list(iter_samples(f))
        assert ours == _wds_samples(str(shard))


def test_long_names_and_other_member_types(tmp_path):
    path = tmp_path / "x.tar"
    long_key = "d" * 60 + "/" + "k" * 120
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in ((f"{long_key}.flac", b"a" * 700), (f"{long_key}.json", b"{}"), ("short.txt", b"hi")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("adir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
    with open(path, "rb") as f:
        samples = list(iter_samples(f))
    assert samples == [{"__key__": long_key, "flac": b"a" * 700, "json": b"{}"}, {"__key__": "short", "txt": b"hi"}]
    with tarfile.open(tmp_path / "p.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ü" * 150 + ".json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with open(tmp_path / "p.tar", "rb") as f:
        assert list(iter_samples(f)) == [{"__key__": "ü" * 150, "json": b"{}"}]
