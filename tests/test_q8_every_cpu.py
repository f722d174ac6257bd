"""The ONNX q8 gives the same vectors on every x86 CPU: its uint8 twin runs where VNNI is missing.

The emulated tests run the runtime under `qemu-x86_64 -cpu Haswell` (an AVX2 CPU without VNNI, as the AMD EPYC
Zen 2/3 and older Intel servers are) from this host; they are skipped where qemu-user is not installed
(.ci/run installs it). See docs/q8-on-every-cpu.md.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import TINY_THRESHOLDS, cosines
from emulation import embed_q8, needs_qemu
from onnx import numpy_helper

from edgembed.runtime import Manifest, int8_path


def test_uint8_twin_holds_the_same_integers(tiny_export):
    variant = Manifest.read(tiny_export).find("onnx", "q8")
    assert variant.portable and variant.alternates == {"no-vnni": "onnx/model_uint8.onnx"}
    primary, twin = (onnx.load(str(tiny_export / name)) for name in (variant.model_file, variant.alternates["no-vnni"]))
    weights = {t.name: numpy_helper.to_array(t) for t in primary.graph.initializer}
    twin_weights = {t.name: numpy_helper.to_array(t) for t in twin.graph.initializer}
    checked = 0
    for node in twin.graph.node:
        if node.op_type in ("MatMulInteger", "MatMulIntegerToFloat"):
            position = 3 if node.op_type == "MatMulInteger" else 5
            b, zero = twin_weights[node.input[1]], twin_weights[node.input[position]]
            assert b.dtype == np.uint8 and weights[node.input[1]].dtype == np.int8
            np.testing.assert_array_equal(b.astype(np.int16) - 128, weights[node.input[1]])
            assert zero.dtype == np.uint8 and (zero == 128).all()
            checked += 1
    assert checked == 28


def test_twin_gives_the_primary_vectors_on_this_cpu(tiny_export, parity_texts, tmp_path):
    native = embed_q8(tiny_export, "onnxruntime", parity_texts, tmp_path / "primary.npy")
    forced = embed_q8(tiny_export, "onnxruntime", parity_texts, tmp_path / "twin.npy", force="avx2")
    assert "model_uint8.onnx" in forced["describe"] and "model_uint8.onnx" not in native["describe"]
    if native["int8_path"] in ("amx", "avx512_vnni", "avx_vnni"):  # both files exact here: the same bits
        np.testing.assert_array_equal(np.load(tmp_path / "primary.npy"), np.load(tmp_path / "twin.npy"))


@needs_qemu
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_q8_on_an_emulated_avx2_cpu_matches_pytorch(tiny_export, parity_texts, parity_reference, report, tmp_path,
                                                   backend):
    seen = embed_q8(tiny_export, backend, parity_texts, tmp_path / "avx2.npy", emulate=True)
    assert seen["int8_path"] == "avx2"
    sims = cosines(np.load(tmp_path / "avx2.npy"), parity_reference)
    report(f"tiny ModernBERT   q8/{backend:<11}: cosine to PyTorch min {sims.min():.6f} mean {sims.mean():.6f} "
           f"on an emulated AVX2 CPU (qemu Haswell)")
    assert sims.min() >= TINY_THRESHOLDS["q8"]


@needs_qemu
@pytest.mark.skipif(int8_path().family != "vnni", reason="shows the difference only from a host with VNNI")
def test_the_int8_file_alone_would_saturate_without_vnni(tiny_export, parity_texts, parity_reference, tmp_path):
    """Forcing the u8 x s8 file onto the emulated AVX2 CPU changes its vectors: the emulation really runs the
    16-bit pair sums (the cause), so the test above exercises the twin on the kernels it is for."""
    embed_q8(tiny_export, "onnxruntime", parity_texts, tmp_path / "saturated.npy", emulate=True, force="avx512_vnni")
    embed_q8(tiny_export, "onnxruntime", parity_texts, tmp_path / "native.npy", force="avx512_vnni")
    saturated, native = np.load(tmp_path / "saturated.npy"), np.load(tmp_path / "native.npy")
    assert not np.allclose(saturated, native, atol=1e-4)
    assert cosines(saturated, parity_reference).min() < cosines(native, parity_reference).min()
