"""Without the compiled extension, CPU ops run the pure-PyTorch path and say so once."""
import subprocess
import sys
import textwrap


def test_missing_extension_falls_back_with_one_warning():
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["sgg_kernels._C"] = None  # makes `from . import _C` raise ImportError
        import torch, sgg_kernels
        c, u = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
        weights = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = [torch.ops.sgg.guide(c, u, None, weights) for _ in range(3)]
        messages = [str(w.message) for w in caught if "C++ extension is not built" in str(w.message)]
        assert len(messages) == 1, messages
        assert "slow pure-PyTorch path" in messages[0]
        exact = sgg_kernels.guide_reference(c, u, None, weights)
        assert all((o.double() - exact).abs().max() < 1e-5 for o in out)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
