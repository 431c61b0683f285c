"""`kit host-demo` rejects bad arguments with one line naming them, before any work."""
import pytest

from kit.cli import main


@pytest.mark.parametrize("argv,name", [
    (["host-demo", "--mem", "1.5XiB"], "mem"), (["host-demo", "--guest-mem", "lots"], "guest_mem"),
    (["host-demo", "--mem", "3GiB"], "guest_mem"), (["host-demo", "--cores", "0"], "cores")])
def test_host_demo_bad_arguments(argv, name, capsys, tmp_path):
    out = tmp_path / "r.html"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kit host-demo: {name}") and not out.exists()


def test_host_demo_small_host_writes_the_report(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["host-demo", "--mem", "8GiB", "--guest-mem", "4GiB", "--cores", "8", "--out", str(out)]) == 0
    html = out.read_text()
    assert "split-on-demand" in html and "<script" not in html
    assert "RMP #PF" in capsys.readouterr().out      # the `none` row crashes the host
