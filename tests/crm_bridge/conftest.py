"""The contract suite lives in the package (``crm_bridge.contract``): rewrite its asserts too."""

import pytest

pytest.register_assert_rewrite("crm_bridge.contract")
