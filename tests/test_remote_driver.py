"""init(address="lightray://HOST:PORT"): a driver with no agent on its host.

Not built yet (objects would have to travel through the agent instead of
shared memory): the address is refused at once with what to do instead,
never taken for an agent on this host.
"""
import pytest

import lightray


def test_a_lightray_url_is_refused_naming_the_ways_to_reach_a_cluster():
    with pytest.raises(ValueError) as refused:
        lightray.init(address="lightray://10.0.0.5:6380")
    message = str(refused.value)
    assert "'lightray://10.0.0.5:6380'" in message
    assert "lightray-agent --address HOST:PORT --cluster-key FILE" in message
    assert "lightray job submit" in message
    assert not lightray.is_initialized()
