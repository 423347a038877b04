"""The loop-aware FSDP2 policy overrides a private hook: other torch versions fail in one line, naming both."""
import pytest

from mythos.errors import UserError
from mythos.parallel.fsdp import TESTED_TORCH, check_torch_version


def test_tested_versions_pass():
    check_torch_version(f"{TESTED_TORCH[0]}.0+cpu")


@pytest.mark.parametrize("version", ["2.6.0", "2.14.0.dev20260101", "3.0.0"])
def test_other_versions_fail_in_one_line(version):
    with pytest.raises(UserError) as e:
        check_torch_version(version)
    msg = str(e.value)
    assert "\n" not in msg and version in msg and TESTED_TORCH[0] in msg
