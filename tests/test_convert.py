"""`kyutai-stt convert`: the name map, the precision policy, round trips on synthetic checkpoints, bad inputs."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from kyutai_stt import cli
from kyutai_stt.cli import convert as convert_command
from kyutai_stt.config import LM_FILE, MIMI, TINY_LM, TINY_MIMI, replace
from kyutai_stt.errors import UserError
from kyutai_stt.weights import checkpoint, convert, hub, names, package, quant, safetensors_io, synthetic

# Relative RMS error of a dequantised tensor against its source (bf16 for the LM, fp32 for Mimi). Measured on
# the full synthetic weights (gaussian, or gaussian rows of varied scale) with least-squares block scales: q4
# 0.0812-0.0813 (absmax scales: 0.0858-0.0860), q8 ~0.0049 (absmax 0.0053), f16 2.0e-4-2.1e-4; the bounds leave
# >10 % margin and still catch any misplaced row or column (error ~1.4).
ERROR_BOUND = {"q4": 0.095, "q8": 0.006, "f16": 2.5e-4, "f32": 0.0}
PACKAGE_LIMIT_BYTES = 680_000_000       # the default package (LM q4, Mimi encoder f16): docs/weights.md
CONVERT_SECONDS = 120               # CPU seconds for the full checkpoint with --report (~76 s on a quiet CI machine)
CONVERT_PEAK_RSS = 8 * 2**30        # the converter streams tensors: its own peak, measured in a child process


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthetic.write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=1)["config"].parent


@pytest.fixture(scope="module")
def tiny_q4(tiny, tmp_path_factory):
    """The default q4 package of the tiny checkpoint, through the CLI, with the report and small shards."""
    out = tmp_path_factory.mktemp("pkg") / "q4"
    assert cli.main(["convert", str(tiny), str(out), "--shard-mb", "9", "--report", "--report-frames", "2",
                     "--report-steps", "2"]) == 0
    return out


def official(path, name):
    raw = safetensors_io.load_tensor(path, safetensors_io.read_index(path)[name])
    return safetensors_io.bf16_bits_to_f32(raw) if raw.dtype == np.uint16 else np.array(raw)


def rel_rms(a, b):
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def copy_with(src, dst, **files):
    """A checkpoint directory of symlinks to src's files, except those given (name -> bytes or callable(path))."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in files:
            (dst / f.name).symlink_to(f)
    for name, content in files.items():
        content(dst / name) if callable(content) else (dst / name).write_bytes(content)
    return dst


# ---- the name map and the policy -------------------------------------------------------------------------------
def test_lm_names_and_shapes(tiny):
    cfg, m, conversion = convert.build(tiny, "q4")
    shapes = {p.name: p.shape for p in conversion.plans}
    d, f = cfg.dim, cfg.ffn_dim
    expected = {"text_emb": (cfg.text_card + 1, d), "out_norm": (d,), "text_head": (cfg.text_card, d),
                "vad_heads": (4 * 6, d), **{f"audio_emb.{k}": (cfg.card + 1, d) for k in range(cfg.n_q)}}
    for i in range(cfg.num_layers):
        expected.update({f"layers.{i}.attn_norm": (d,), f"layers.{i}.attn_qkv": (3 * d, d),
                         f"layers.{i}.attn_out": (d, d), f"layers.{i}.ffn_norm": (d,),
                         f"layers.{i}.ffn_in": (2 * f, d), f"layers.{i}.ffn_out": (d, f)})
    assert {n: s for n, s in shapes.items() if not n.startswith("mimi.")} == expected
    assert m == TINY_MIMI                                    # read from the Mimi config the checkpoint names
    assert shapes["mimi.conv_in"] == (32, 7) and shapes["mimi.blocks.3.down"] == (512, 16 * 256)
    assert shapes["mimi.codebooks"] == (32 * 2048, 64) and shapes["mimi.codebook_sqnorms"] == (32, 2048)
    assert shapes["mimi.rvq_in"] == (128, 128) and shapes["mimi.downsample"] == (128, 4 * 128)
    assert not any(n.startswith(("mimi.decoder", "decoder")) for n in shapes)


def test_every_official_tensor_is_mapped_or_dropped():
    full = replace(TINY_LM, num_layers=3)
    lm = names.package_sources(list(checkpoint.lm_layout(full)), names.LM_NAMES)
    assert sum(len(v) for v in lm.values()) == len(checkpoint.lm_layout(full))
    mimi = names.package_sources(list(checkpoint.mimi_layout(MIMI)), names.MIMI_NAMES, names.MIMI_DROPPED)
    used = {n for v in mimi.values() for n in v}
    encoder = checkpoint.mimi_encoder_layout(MIMI)
    assert used == {n for n in encoder if not n.endswith(("_initialized", "cluster_usage"))}
    assert mimi["mimi.codebooks"][:2] == ["quantizer.rvq_first.vq.layers.0._codebook.embedding_sum",
                                          "quantizer.rvq_rest.vq.layers.0._codebook.embedding_sum"]
    assert mimi["mimi.codebooks"][-1].startswith("quantizer.rvq_rest.vq.layers.30.")


def test_precision_policy():
    assert names.precision("layers.3.ffn_in", (11264, 2048), "q4") == "q4"
    assert names.precision("layers.3.attn_norm", (2048,), "q4") == "f32"
    assert names.precision("mimi.codebooks", (65536, 256), "q4") == "f16"
    assert names.precision("mimi.codebooks", (65536, 256), "q4-small") == "q8"
    assert names.precision("mimi.codebooks", (65536, 256), "f16") == "f32"
    assert names.precision("mimi.blocks.0.res_conv2", (64, 32), "q4-small") == "f32"  # K = 32: not quantisable
    assert names.precision("text_emb", (8001, 2048), "f16") == "f16"
    with pytest.raises(quant.QuantError, match="unknown quant type 'q3'"):
        names.precision("text_emb", (8001, 2048), "q3")


# ---- round trips -------------------------------------------------------------------------------------------------
def report_rows(text: str) -> list[tuple[str, str, float]]:
    """The per-tensor rows of `convert --report` (name, quant, shape, bytes, relative RMS error with absmax scales
    and as stored, values not stored exactly) -> (name, quant, error as stored)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[1] in ERROR_BOUND:
            rows.append((parts[0], parts[1], float(parts[5])))
    return rows


def check_round_trip(pkg_dir, ckpt):
    pkg = package.open_package(pkg_dir)
    lm, mm = ckpt / LM_FILE, ckpt / pkg.config.mimi_name
    expected = {
        "text_emb": official(lm, "text_emb.weight"), "audio_emb.5": official(lm, "emb.5.weight"),
        "layers.1.attn_qkv": official(lm, "transformer.layers.1.self_attn.in_proj_weight"),
        "layers.0.ffn_in": official(lm, "transformer.layers.0.gating.linear_in.weight"),
        "layers.1.ffn_norm": official(lm, "transformer.layers.1.norm2.alpha").reshape(-1),
        "text_head": official(lm, "text_linear.weight"),
        "vad_heads": np.concatenate([official(lm, f"extra_heads.{h}.weight") for h in range(4)]),
        "mimi.conv_in": official(mm, "encoder.model.0.conv.conv.weight")[:, 0, :],
        "mimi.layers.1.ffn_in": official(mm, "encoder_transformer.transformer.layers.1.linear1.weight"),
        "mimi.rvq_in": np.concatenate([official(mm, f"quantizer.rvq_{p}.input_proj.weight")[:, :, 0]
                                       for p in ("first", "rest")]),
    }
    for name, want in expected.items():
        assert rel_rms(pkg.dequantize(name), want) <= ERROR_BOUND[pkg.tensor(name).quant], name
    # Codebooks: level 0 = rvq_first, level 5 = rvq_rest layer 4; entries = embedding_sum / usage.
    m = pkg.mimi_config
    books = pkg.dequantize("mimi.codebooks").reshape(m.n_q, m.bins, m.codebook_dim)
    for level, prefix in ((0, "quantizer.rvq_first.vq.layers.0"), (5, "quantizer.rvq_rest.vq.layers.4")):
        usage = official(mm, prefix + "._codebook.cluster_usage")
        want = official(mm, prefix + "._codebook.embedding_sum") / usage[:, None]
        assert rel_rms(books[level], want) <= ERROR_BOUND[pkg.tensor("mimi.codebooks").quant]
    np.testing.assert_allclose(pkg.dequantize("mimi.codebook_sqnorms"), np.sum(books**2, axis=-1), rtol=1e-5)
    # A conv as a matrix: k-major columns, so conv(window)[o] = M @ window.ravel() for a time-major [k, C_in] window.
    w = official(mm, "encoder.model.12.conv.conv.weight")               # [C_out, C_in, k]: [1024, 512, 16]
    window = np.random.default_rng(0).standard_normal((w.shape[2], w.shape[1])).astype(np.float32)
    direct = np.einsum("oct,tc->o", w, window)
    assert rel_rms(pkg.dequantize("mimi.blocks.3.down") @ window.ravel(), direct) < 0.1
    return pkg


def test_round_trip_q4_through_the_cli(tiny, tiny_q4, capsys):
    pkg = check_round_trip(tiny_q4, tiny)
    assert pkg.variant == "vad" and pkg.quant == "q4" and pkg.config.dim == TINY_LM.dim
    assert len(pkg.manifest["files"]) > 1
    assert all(f["bytes"] <= 9 * 2**20 for f in pkg.manifest["files"])


@pytest.mark.parametrize("choice, types", [("q4-small", {"q4", "q8", "f32"}), ("q8", {"q8", "f16", "f32"}),
                                           ("f16", {"f16", "f32"})])
def test_round_trip_other_quants(tiny, tmp_path, choice, types):
    rows = []
    convert.convert(tiny, tmp_path / "pkg", choice, report=rows)
    assert {r.quant for r in rows} == types
    for r in rows:
        assert r.rel_rms <= ERROR_BOUND[r.quant], r
    check_round_trip(tmp_path / "pkg", tiny)


def test_default_policy_keeps_the_mimi_encoder_in_f16(tiny):
    for choice in ("q4", "q8"):
        plans = convert.build(tiny, choice)[2].plans
        mimi = {p.name: p.quant for p in plans if p.name.startswith("mimi.")}
        assert set(mimi.values()) == {"f16", "f32"} and mimi["mimi.codebooks"] == "f16", choice
    plans = convert.build(tiny, "f16")[2].plans                      # the exact package: Mimi as the checkpoint
    assert {p.quant for p in plans if p.name.startswith("mimi.")} == {"f32"}


def test_f16_package_is_exact_but_for_lm_values_below_f16s_normal_range(tiny, tmp_path, capsys):
    """Every Mimi value is stored exactly (f32); every LM (bf16) value too, except those with |x| < 2^-14, which
    f16 holds as subnormals (within 2^-25); --report counts them, and its end-to-end line finds the package's Mimi
    codes and LM tokens equal to the source's."""
    out = tmp_path / "f16"
    assert cli.main(["convert", str(tiny), str(out), "--quant", "f16", "--report", "--report-frames", "4",
                     "--report-steps", "4"]) == 0
    printed = capsys.readouterr().out
    pkg = package.open_package(out, verify_hashes=False)
    source = convert.build(tiny, "f16")[2].source
    inexact = total = 0
    for name in pkg.tensor_names():
        stored, want = pkg.dequantize(name), source(name)
        differs = stored != want
        if name.startswith("mimi."):
            assert not differs.any(), name
            continue
        assert (np.abs(want[differs]) < 2.0**-14).all(), name
        assert (np.abs(stored - want)[differs] <= 2.0**-25).all(), name
        inexact, total = inexact + int(differs.sum()), total + want.size
    with capsys.disabled():
        print(f"\n[tiny seed-1 f16 package] LM values not stored exactly: {inexact:,} of {total:,}")
    assert 0 < inexact < 1e-4 * total                                 # gaussian weights: a few dozen per seed
    assert f"LM values not stored exactly: {inexact:,} of {total:,}" in printed
    assert "Mimi values not stored exactly: 0 of" in printed
    assert "Mimi codes equal 100.0% (level 0: 100.0%) over 4 frames" in printed
    assert "LM greedy tokens equal 100.0% over 4 teacher-forced steps" in printed


def test_q4_small_prints_its_cost_and_report_shows_both_scale_methods(tiny, tmp_path, capsys):
    assert cli.main(["convert", str(tiny), str(tmp_path / "small"), "--quant", "q4-small", "--report",
                     "--report-frames", "3", "--report-steps", "2"]) == 0
    captured = capsys.readouterr()
    assert names.Q4_SMALL_NOTE in captured.err
    assert "rel. RMS absmax" in captured.out and "rel. RMS stored" in captured.out
    line = next(x for x in captured.out.splitlines() if x.startswith("end to end"))
    codes_equal = float(line.split("Mimi codes equal ")[1].split("%")[0])
    assert codes_equal < 60, line                                     # q4 Mimi: most codes differ


@pytest.mark.parametrize("size", ["full", "2.6b"])
def test_full_size_bytes_of_each_policy(capsys, size):
    """Tensor bytes of each --quant policy at full size, from the official layout alone (no checkpoint needed):
    the 1B's default stays within the 680 MB budget with its f16 Mimi encoder (docs/weights.md's size table); the
    2.6B's is printed for the same table."""
    cfg = synthetic.SIZES[size]
    sizes = {}
    for choice in names.QUANT_CHOICES:
        parts = {"lm": 0, "mimi": 0}
        for plan in convert.layout_plans(cfg, MIMI, choice):
            parts["mimi" if plan.name.startswith("mimi.") else "lm"] += plan.nbytes
        sizes[choice] = parts
        with capsys.disabled():
            print(f"\n[{size} size, --quant {choice}] tensor data {sum(parts.values()) / 1e6:.2f} MB: LM "
                  f"{parts['lm'] / 1e6:.2f} MB, Mimi encoder {parts['mimi'] / 1e6:.2f} MB", end="")
    if size == "full":
        assert sum(sizes["q4"].values()) < PACKAGE_LIMIT_BYTES - 5_000_000      # headers, manifest: ~0.3 MB
    else:                                      # docs/weights.md's 2.6B row (the estimate was ~1.4 GB)
        assert sum(sizes["q4"].values()) == 1_584_945_408 and sizes["q4"]["mimi"] == 112_133_248
    assert sizes["q4"]["lm"] == sizes["q4-small"]["lm"] and sizes["q4-small"]["mimi"] < sizes["q4"]["mimi"] / 2


def test_report_bounds_and_bytes(tiny, tmp_path):
    rows = []
    manifest = convert.convert(tiny, tmp_path / "pkg", "q4", report=rows)
    for r in rows:
        assert r.rel_rms <= ERROR_BOUND[r.quant], r
        assert r.rel_rms <= r.rel_rms_absmax * (1 + 1e-6), r          # least-squares scales never lose
        assert r.quant not in ("q4", "q8") or r.rel_rms < 0.98 * r.rel_rms_absmax, r
        assert r.nbytes == quant.nbytes(r.quant, r.shape)
    assert {r.name for r in rows} == set(manifest["tensors"])
    assert "worst" in convert_command.format_report(rows)


def test_plain_variant_without_vad_heads(tiny, tmp_path):
    cfg = replace(TINY_LM, extra_heads_num_heads=0)
    ckpt = copy_with(tiny, tmp_path / "plain",
                     **{LM_FILE: lambda p: synthetic.write_lm(p, cfg, 1),
                        "config.json": json.dumps(cfg.to_official_json()).encode()})
    manifest = convert.convert(ckpt, tmp_path / "pkg")
    assert manifest["variant"] == "plain" and "vad_heads" not in manifest["tensors"]
    assert not package.open_package(tmp_path / "pkg").config.has_vad_heads


# ---- bad input ---------------------------------------------------------------------------------------------------
def lm_with(path, changes):
    """Write the tiny LM with layout changes: name -> (dtype, shape), or None to leave the tensor out."""
    layout = checkpoint.lm_layout(TINY_LM)
    specs = [(n, "BF16", s) for n, s in layout.items() if n not in changes]
    specs += [(n, *c) for n, c in changes.items() if c is not None]

    def produce(name):
        dtype, shape = next((d, s) for n, d, s in specs if n == name)
        values = np.zeros(shape, np.float32)
        return safetensors_io.f32_to_bf16_bits(values) if dtype == "BF16" else values.astype(
            safetensors_io.DTYPES[dtype][0])
    safetensors_io.write(path, specs, produce)


@pytest.mark.parametrize("change, message", [
    ({"transformer.layers.1.norm2.alpha": None}, "tensor 'transformer.layers.1.norm2.alpha' is missing"),
    ({"extra.weight": ("BF16", (4, 4))}, "unexpected tensor 'extra.weight'"),
    ({"text_linear.weight": ("BF16", (8000, 64))}, "tensor 'text_linear.weight' has shape [8000, 64]"),
    ({"emb.3.weight": ("F16", (2049, 128))}, "tensor 'emb.3.weight' has dtype F16, expected BF16"),
])
def test_bad_checkpoint_names_file_and_tensor(tiny, tmp_path, change, message):
    ckpt = copy_with(tiny, tmp_path / "bad", **{LM_FILE: lambda p: lm_with(p, change)})
    with pytest.raises(package.PackageError) as e:
        convert.convert(ckpt, tmp_path / "pkg")
    assert message in str(e.value) and str(ckpt / LM_FILE) in str(e.value)
    assert list(tmp_path.iterdir()) == [ckpt]                   # nothing written


def test_truncated_safetensors_leaves_nothing(tiny, tmp_path):
    data = (tiny / LM_FILE).read_bytes()
    ckpt = copy_with(tiny, tmp_path / "bad", **{LM_FILE: data[:-1000]})
    with pytest.raises(safetensors_io.SafetensorsError, match=r"model.safetensors: tensor '.*' ends at .*truncated"):
        convert.convert(ckpt, tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == [ckpt]


def test_failure_mid_write_leaves_nothing(tiny, tmp_path, monkeypatch):
    real = convert._produce_tensor

    def failing(src, sources, plan):
        if plan.name == "mimi.layers.1.ffn_in":
            raise OSError("disk full (injected)")
        return real(src, sources, plan)
    monkeypatch.setattr(convert, "_produce_tensor", failing)
    with pytest.raises(UserError, match="writing the package failed .*injected.*nothing was left behind"):
        convert.convert(tiny, tmp_path / "pkg", shard_mb=9)
    assert list(tmp_path.iterdir()) == []


def test_unknown_quant_type_and_existing_output(tiny, tmp_path, capsys):
    assert cli.main(["convert", str(tiny), str(tmp_path / "pkg"), "--quant", "q3"]) == 2
    assert "unknown quant type 'q3'" in capsys.readouterr().err
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "x").write_text("keep me")
    assert cli.main(["convert", str(tiny), str(tmp_path / "pkg")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "pkg" / "x").exists()
    assert cli.main(["convert", str(tmp_path / "nowhere" / "ckpt"), str(tmp_path / "out")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_missing_checkpoint_file(tiny, tmp_path):
    ckpt = copy_with(tiny, tmp_path / "bad")
    (ckpt / TINY_LM.mimi_name).unlink()
    with pytest.raises(package.PackageError, match="mimi-tiny.safetensors: missing"):
        convert.convert(ckpt, tmp_path / "pkg")


@pytest.mark.parametrize("damage, problem", [
    (None, "mimi-tiny.json: key '<file>': not found"),
    ("{", "not valid JSON"),
    ({"transformer": {"gating": "silu"}}, "key 'transformer.gating': unsupported value 'silu'"),
    ({"transformer": {"num_layers": 10**6}}, "key 'num_layers': expected an integer in [1, 64], got 1000000"),
    ({"seanet": {"ratios": [8, 6, 5, 3]}}, "a frame must be 1920 samples, a whole number of hops"),
    ({"seanet": {"n_filters": 48}}, "must keep every conv's channels a multiple of 32"),
])
def test_a_damaged_mimi_config_is_named(tiny, tmp_path, capsys, damage, problem):
    """The Mimi config a checkpoint names (moshi's format) is checked before anything is read or written."""
    name = TINY_LM.mimi_config_name
    if damage is None or isinstance(damage, str):
        content = (damage or "").encode()
    else:
        raw = json.loads((tiny / name).read_text())
        for part, changes in damage.items():
            raw[part].update(changes)
        content = json.dumps(raw).encode()
    ckpt = copy_with(tiny, tmp_path / "bad", **{name: content})        # the others are links to `tiny`'s files
    if damage is None:
        (ckpt / name).unlink()
    assert cli.main(["convert", str(ckpt), str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err, err
    assert not (tmp_path / "pkg").exists()


# ---- the hub -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_unreachable_is_a_clear_error(tmp_path, env):
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}
    environment.pop("HF_HUB_OFFLINE", None) if "HF_ENDPOINT" in env else None
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "convert", hub.DEFAULT_REPO, str(tmp_path / "p")],
                          env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 30
    assert f"could not download {hub.DEFAULT_REPO}" in done.stderr
    assert "convert that directory instead" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p").exists()


def test_hub_download_then_same_local_path(tiny, monkeypatch):
    import huggingface_hub
    fetched = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False):
        fetched.append(filename)
        return str(tiny / filename)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: True)
    assert hub.checkpoint_dir("kyutai/stt-1b-en_fr-candle") == tiny
    assert fetched == ["config.json", LM_FILE, TINY_LM.mimi_name, TINY_LM.tokenizer_name,
                       TINY_LM.mimi_config_name]


# ---- full size ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.full_size
def test_full_q4_package(full_q4_package):
    """The default package of the full-size checkpoint: size, precision, round trip, and the converter's own time
    and memory, measured in a child process (the CLI) so that nothing this test process loaded before counts. The
    time bound is on the child's CPU time: its wall time also counts whatever the other test process runs."""
    done, root, ckpt = full_q4_package.measured, full_q4_package.path, full_q4_package.checkpoint
    report = full_q4_package.report
    assert done.returncode == 0, report.read_text()
    assert done.cpu_seconds < CONVERT_SECONDS, done.cpu_seconds
    assert done.peak_rss < CONVERT_PEAK_RSS, f"convert peaked at {done.peak_rss / 2**30:.2f} GiB"
    manifest = json.loads((root / package.MANIFEST).read_text())
    on_disk = sum(f.stat().st_size for f in root.iterdir())
    assert on_disk <= PACKAGE_LIMIT_BYTES, on_disk
    assert on_disk == manifest["total_bytes"] + (root / package.MANIFEST).stat().st_size
    rows = report_rows(report.read_text())                           # (name, quant, rel. RMS error)
    assert {name for name, _, _ in rows} == set(manifest["tensors"]), "one report row per tensor"
    for name, quant_type, rel in rows:
        assert rel <= ERROR_BOUND[quant_type], (name, quant_type, rel)
    assert {quant_type for name, quant_type, _ in rows if name.startswith("mimi.")} == {"f16", "f32"}
    print(f"\n[full default package] {on_disk / 1e6:.1f} MB on disk, limit {PACKAGE_LIMIT_BYTES / 1e6:.0f} MB; "
          f"convert: {done.cpu_seconds:.0f} s of CPU ({done.seconds:.0f} s wall), peak RSS "
          f"{done.peak_rss / 2**30:.2f} GiB")
    pkg = check_round_trip(root, ckpt)                               # verifies every file's SHA-256
    assert all(f["bytes"] <= convert.DEFAULT_SHARD_MB * 2**20 for f in manifest["files"])
    assert pkg.config.num_params == 989_253_632


def test_synthetic_origin_is_recorded_in_the_manifest(tiny, tiny_q4, tmp_path):
    """A package converted from a synthetic checkpoint says so (every tool then labels its transcripts
    meaningless); one converted from a checkpoint without the marker, like the official ones, does not."""
    pkg = package.open_package(tiny_q4)
    assert pkg.synthetic["size"] == "tiny" and pkg.synthetic["seed"] == 1
    assert "meaningless" in pkg.synthetic["note"]
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    for f in tiny.iterdir():
        if f.name != synthetic.MARKER_FILE:
            (unmarked / f.name).symlink_to(f)
    convert.convert(unmarked, tmp_path / "pkg", "q4")
    assert package.open_package(tmp_path / "pkg").synthetic is None
