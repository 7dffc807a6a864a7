"""The kernel files' shared helpers: WGSL has no include, so a helper two kernels need is written in both; here every
function and constant defined in more than one kernels/*.wgsl file must be text-equal in all of them (a fix made
in one copy and not the other fails here). Names that mean a different function per kernel are listed, with why.
"""
from __future__ import annotations

import re
from collections import defaultdict

from kyutai_stt.engine import device as gpu

# Same name, different function by design.
DIFFERENT_PER_KERNEL = {
    "main": "every kernel's entry point",
    "combine": "the entry point that adds split work: attention its softmax partials, matmul its column ranges",
    "tiled": "the entry point of plans of many streams: conv1d's and rvq's tiled products (64 x 64 per workgroup)",
    "beats": "argmax keeps the highest logit, rvq the lowest distance",
    "reduce_workgroup": "attention reduces in vec4 scratch (reused for outputs), attention_chunk in f32 scratch",
    "rotate": "attention rotates two pairs (vec4), attention_chunk one pair (vec2)",
}


def definitions(source: str) -> dict[str, str]:
    """Module-scope `fn` (signature and body, to the matching brace) and `const` declarations, by name."""
    found = {}
    for match in re.finditer(r"^(fn|const) (\w+)", source, re.MULTILINE):
        kind, name = match.groups()
        if kind == "const":
            found[name] = source[match.start():source.index(";", match.end()) + 1]
            continue
        depth, end = 0, source.index("{", match.end())
        while True:
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            if depth == 0:
                break
            end += 1
        found[name] = source[match.start():end + 1]
    return found


def copies() -> dict[str, dict[str, str]]:
    """name -> {file: definition} for the names defined in more than one kernel file."""
    by_name = defaultdict(dict)
    for path in sorted(gpu.KERNEL_DIR.glob("*.wgsl")):
        for name, text in definitions(path.read_text()).items():
            by_name[name][path.name] = text
    return {name: files for name, files in by_name.items() if len(files) > 1}


def test_definitions_parser():
    source = "const A = 1u;\nfn f(x: u32) -> u32 {\n    if (x > A) { return 1u; }\n    return x;\n}\nfn g() {}\n"
    assert definitions(source) == {"A": "const A = 1u;", "g": "fn g() {}",
                                   "f": "fn f(x: u32) -> u32 {\n    if (x > A) { return 1u; }\n    return x;\n}"}


def test_helpers_copied_between_kernels_are_identical():
    shared = copies()
    # The copies this test exists for (matvec and its subgroup variant share their whole format section).
    # matvec_int8 and its subgroup variant share everything but the reduction; quantize_input shares silu, and with
    # attention's merges the int8 packing and rounding (int8_inverse, with attention_int8's rings too) and the f16
    # path's block scale and pairs (one rounding rule in all); the tiled products of conv1d, matmul and rvq their
    # 4 x 4 register block's four steps; attention and attention_int8 their score rounds and softmax numerators.
    for name in ("silu", "input_vector", "load_inputs", "unit_dot", "q4_word_dot", "q8_word_dot", "unit_weights",
                 "q4_low", "q8_low", "nibbles_dot", "q4_unit_dot_int8", "member_sums", "store_total",
                 "f16_block_scale", "f16_pairs", "four_steps", "int8_inverse", "round_scores", "softmax_numerators"):
        assert name in shared, f"{name} is no longer defined in several kernels: update this test"
    differing = {name: sorted(files) for name, files in shared.items()
                 if name not in DIFFERENT_PER_KERNEL and len(set(files.values())) > 1}
    assert not differing, f"helpers that differ between the kernel files that define them: {differing}"


# Kernels no plan dispatches, with their one user.
NOT_IN_PLANS = {"subgroup_size": "gpu.subgroup_size() probes the adapter with it once",
                "matmul": "plans of more than 8 streams (models/lm.py; the site's plans have one)",
                "matmul_int8": "plans of more than 8 streams with the int8 path (models/lm.py)",
                "attention_int8": "plans with int8 KV rings, which the user asks for (models/variants.with_kv_rings)"}


def test_every_kernel_file_is_used(tiny_packages):
    """A kernel file that no plan variant dispatches (for the LM-only or whole-frame plans of a q4, q4-small and an
    f16 package) is dead code: delete it, or name its user in NOT_IN_PLANS."""
    from kyutai_stt.site.build import build_plans

    used = set(NOT_IN_PLANS)
    for quant in ("q4", "q4-small", "f16"):
        for plan in build_plans(tiny_packages(quant)).values():
            used |= {p.kernel for p in plan.pipelines}
    files = {path.stem for path in gpu.KERNEL_DIR.glob("*.wgsl")}
    assert files - used == set(), f"kernel files no plan uses: {sorted(files - used)}"
    assert used - files == set(), f"plans name kernel files that do not exist: {sorted(used - files)}"
