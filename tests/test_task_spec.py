"""TaskSpec: fields named where a spec is built, a plain tuple where it travels."""
from lightray import task_spec
from lightray.task_spec import TaskSpec, new_task_spec


def test_a_task_spec_is_built_by_field_name_in_the_order_of_its_fields():
    spec = new_task_spec(b"t", b"f", "name", None, [b"d"], [b"c"], num_returns=2,
                         resources={"CPU": 1}, max_retries=3, retry_exceptions=True,
                         owner="driver", attempts_made=1, strategy="SPREAD")
    assert type(spec) is tuple   # plain on the wire: see lightray/task_spec.py
    named = TaskSpec._make(spec)
    assert named.deps == [b"d"] and named.owner == "driver" and named.strategy == "SPREAD"
    assert spec[task_spec.ATTEMPTS_MADE] == named.attempts_made == 1
    retried = task_spec.for_retry_through_agent(task_spec.with_owner(spec, "other"))
    assert TaskSpec._make(retried)[10:] == (None, 2, "SPREAD", None)
