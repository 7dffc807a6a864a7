"""The package format and its loading API: manifest, GGUF streams, verification errors."""

import hashlib
import json
import shutil

import gguf
import numpy as np
import pytest

from kyutai_stt.config import TINY_LM
from kyutai_stt.weights import convert, package, quant, synthetic
from kyutai_stt.weights.package import PackageError, TensorPlan, open_package


@pytest.fixture(scope="module")
def pkg_dir(tmp_path_factory):
    ckpt = synthetic.write_checkpoint(tmp_path_factory.mktemp("ckpt"), "tiny", seed=2)["config"].parent
    out = tmp_path_factory.mktemp("pkg") / "q4"
    convert.convert(ckpt, out, "q4-small", shard_mb=5)       # q4-small: its largest tensor fits 5 MiB
    return out


@pytest.fixture
def copy(pkg_dir, tmp_path):
    return shutil.copytree(pkg_dir, tmp_path / "pkg")


def manifest_of(path):
    return json.loads((path / package.MANIFEST).read_text())


def test_manifest_files_sizes_and_hashes(pkg_dir):
    manifest = manifest_of(pkg_dir)
    assert manifest["format"] == package.FORMAT and manifest["format_version"] == package.FORMAT_VERSION
    assert manifest["variant"] == "vad" and manifest["quant"] == "q4-small"
    assert manifest["config"]["lm"]["dim"] == 128 and manifest["config"]["derived"]["ffn_dim"] == TINY_LM.ffn_dim == 384
    assert manifest["config"]["mimi"]["ratios"] == [8, 6, 5, 4]
    on_disk = sorted(p.name for p in pkg_dir.iterdir())
    assert on_disk == sorted([f["name"] for f in manifest["files"]] + [package.MANIFEST])
    for f in manifest["files"]:
        data = (pkg_dir / f["name"]).read_bytes()
        assert len(data) == f["bytes"] <= 5 * 2**20
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"])
    assert manifest["tokenizer"]["pieces"][:4] == list(synthetic.SPECIAL_PIECES)


def test_streams_agree_with_gguf_read_independently(pkg_dir):
    """Every stream: aligned, within 128 MiB, sized by its shape, and where the gguf library finds it."""
    manifest = manifest_of(pkg_dir)
    readers = {f["name"]: gguf.GGUFReader(pkg_dir / f["name"]) for f in manifest["files"]}
    gguf_type = {"u32": gguf.GGMLQuantizationType.I32, "f16": gguf.GGMLQuantizationType.F16,
                 "f32": gguf.GGMLQuantizationType.F32}
    found = {}
    for file_name, reader in readers.items():
        assert reader.get_field("kyutai_stt.format_version").contents() == package.FORMAT_VERSION
        assert json.loads(reader.get_field("kyutai_stt.config").contents()) == manifest["config"]
        assert reader.alignment == package.ALIGNMENT
        for t in reader.tensors:
            found[t.name] = (file_name, t)
    for name, entry in manifest["tensors"].items():
        assert set(entry["streams"]) == ({"qs", "d"} if entry["quant"] in ("q4", "q8") else {"w"})
        for key, s in entry["streams"].items():
            file_name, t = found.pop(f"{name}.{key}")
            itemsize = np.dtype(package.STREAM_DTYPES[s["dtype"]]).itemsize
            assert s["file"] == file_name and s["offset"] == t.data_offset and s["nbytes"] == t.n_bytes
            assert s["offset"] % package.ALIGNMENT == 0 and s["nbytes"] <= package.MAX_STREAM_BYTES
            assert s["nbytes"] == int(np.prod(s["shape"])) * itemsize and s["nbytes"] % 4 == 0
            assert t.tensor_type == gguf_type[s["dtype"]] and list(t.shape[::-1]) == s["shape"]
    assert not found                                            # nothing in the GGUF files that the manifest lacks


def test_streams_are_views_of_the_files(pkg_dir):
    pkg = open_package(pkg_dir)
    assert "layers.0.attn_qkv" in pkg.tensor_names() and pkg.tokenizer.pad_id == 3
    streams = pkg.streams("layers.0.attn_qkv")
    assert streams["qs"].dtype == np.uint32 and streams["qs"].shape == (384, 16)
    assert streams["d"].dtype == np.float16 and streams["d"].shape == (384, 4)
    s = pkg.tensor("layers.0.attn_qkv").streams["qs"]
    raw = (pkg_dir / s.file).read_bytes()[s.offset:s.offset + s.nbytes]
    assert bytes(memoryview(streams["qs"])) == raw               # GPU-ready bytes, no conversion
    assert isinstance(streams["qs"].base, np.memmap) or isinstance(streams["qs"], np.memmap)
    assert not streams["qs"].flags.writeable
    np.testing.assert_array_equal(pkg.dequantize("layers.0.attn_qkv"),
                                  quant.dequantize(streams, "q4", (384, 128)))
    with pytest.raises(PackageError, match="no tensor 'nope'"):
        pkg.tensor("nope")


def test_wrong_format_version(copy):
    manifest = manifest_of(copy)
    manifest["format_version"] = package.FORMAT_VERSION + 1
    (copy / package.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"manifest.json: format version 2, but this kyutai-stt reads version 1"):
        open_package(copy)


def test_checksum_mismatch_names_file_and_tensor(copy):
    s = manifest_of(copy)["tensors"]["mimi.layers.1.ffn_in"]["streams"]["d"]
    with open(copy / s["file"], "r+b") as f:
        f.seek(s["offset"] + 10)
        byte = f.read(1)
        f.seek(s["offset"] + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PackageError) as e:
        open_package(copy)
    assert f"{s['file']}: SHA-256 mismatch" in str(e.value)
    assert "tensor 'mimi.layers.1.ffn_in' (stream d)" in str(e.value)
    open_package(copy, verify_hashes=False)                     # hashing skipped: sizes and headers still agree


def test_checksum_mismatch_outside_tensor_data(copy):
    first = manifest_of(copy)["files"][0]["name"]
    with open(copy / first, "r+b") as f:
        f.seek(40)                                              # inside the key/value metadata
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(PackageError, match="outside the tensor data"):
        open_package(copy)


def test_truncated_shard_names_file_and_tensor(copy):
    manifest = manifest_of(copy)
    f = manifest["files"][1]
    last = [n for n, t in manifest["tensors"].items()
            if any(s["file"] == f["name"] for s in t["streams"].values())][-1]
    with open(copy / f["name"], "r+b") as fh:
        fh.truncate(f["bytes"] - 100)
    with pytest.raises(PackageError) as e:
        open_package(copy, verify_hashes=False)
    assert f"{f['name']}: truncated" in str(e.value) and f"tensor '{last}'" in str(e.value)


def test_missing_shard_and_missing_manifest(copy, tmp_path):
    name = manifest_of(copy)["files"][0]["name"]
    (copy / name).unlink()
    with pytest.raises(PackageError, match=f"{name}: missing .*tensors 'text_emb'"):
        open_package(copy)
    with pytest.raises(PackageError, match="manifest.json: not found"):
        open_package(tmp_path)


def test_manifest_disagreeing_with_gguf(copy):
    manifest = manifest_of(copy)
    manifest["tensors"]["layers.1.ffn_out"]["streams"]["qs"]["offset"] += package.ALIGNMENT
    (copy / package.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="GGUF tensor 'layers.1.ffn_out.qs' is not where or what the manifest"):
        open_package(copy, verify_hashes=False)


@pytest.mark.parametrize("where, message", [("config", "GGUF metadata 'kyutai_stt.config' is not what the manifest"),
                                            ("padding", "should be zero padding")])
def test_a_header_edit_with_a_matching_hash_is_refused(copy, where, message):
    """The file's SHA-256 made to match (a forged or re-hashed file): every header byte is still checked against
    the manifest, the padding too."""
    manifest = manifest_of(copy)
    name = manifest["files"][0]["name"]
    data = bytearray((copy / name).read_bytes())
    if where == "config":
        at = data.index(b'"lm":{') + 2                              # the manifest's config, copied into the header
    else:
        first = min(s["offset"] for t in manifest["tensors"].values() for s in t["streams"].values()
                    if s["file"] == name)
        at = first - 1                                              # the last padding byte before the first stream
        assert data[at] == 0
    data[at] ^= 0x20
    (copy / name).write_bytes(bytes(data))
    manifest["files"][0]["sha256"] = package.sha256_file(copy / name)
    (copy / package.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=message):
        open_package(copy)


def test_unknown_quant_in_manifest_names_the_tensor(copy):
    manifest = manifest_of(copy)
    manifest["tensors"]["text_head"]["quant"] = "q3"
    (copy / package.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="tensor 'text_head': unknown quant type 'q3'"):
        open_package(copy, verify_hashes=False)


def test_shard_planning_limits():
    small = [TensorPlan(f"t{i}", "q4", (1024, 1024)) for i in range(5)]       # 576 KiB each
    shards = package.plan_shards(small, 2 * 2**20, kv_bytes=4096)
    assert [len(s) for s in shards] == [3, 2]
    with pytest.raises(PackageError, match="tensor 't0' .* does not fit in a 1048576-byte shard"):
        package.plan_shards([TensorPlan("t0", "f32", (1024, 1024))], 2**20, kv_bytes=4096)
    with pytest.raises(PackageError, match="tensor 'huge' stream w: .* exceeds"):
        package.plan_shards([TensorPlan("huge", "f32", (8192, 8192))], 2**30, kv_bytes=4096)
