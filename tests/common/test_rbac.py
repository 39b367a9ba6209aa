"""RBAC evaluation: examples and properties (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kriten_common.rbac import RESOURCES, Permission, is_allowed

resources = st.sampled_from(RESOURCES)
names = st.sampled_from(["a", "b", "hello-kriten", "x.y"])
accesses = st.sampled_from(["read", "write"])
permissions = st.builds(
    Permission,
    resource=st.one_of(resources, st.just("*")),
    resource_ids=st.lists(st.one_of(names, st.just("*")), max_size=3).map(tuple),
    access=accesses,
)


def test_examples() -> None:
    grant = [Permission("tasks", ("hello-kriten",), "read")]
    assert is_allowed(grant, resource="tasks", resource_id="hello-kriten", access="read")
    assert not is_allowed(grant, resource="tasks", resource_id="hello-kriten", access="write")
    assert not is_allowed(grant, resource="tasks", resource_id="other", access="read")
    assert not is_allowed(grant, resource="runners", resource_id="hello-kriten", access="read")
    # Creation asks for "*": a grant on one name is not enough.
    assert not is_allowed(grant, resource="tasks", resource_id="*", access="read")
    assert is_allowed(
        [Permission("*", ("*",), "write")], resource="audit", resource_id="*", access="write"
    )
    assert not is_allowed([], resource="tasks", resource_id="a", access="read")


@given(st.lists(permissions, max_size=5), resources, names)
def test_write_implies_read(grants: list[Permission], resource: str, name: str) -> None:
    if is_allowed(grants, resource=resource, resource_id=name, access="write"):
        assert is_allowed(grants, resource=resource, resource_id=name, access="read")


@given(resources, names, accesses)
def test_star_grants_all(resource: str, name: str, access: str) -> None:
    star = [Permission("*", ("*",), "write")]
    assert is_allowed(star, resource=resource, resource_id=name, access=access)  # type: ignore[arg-type]


@given(st.lists(permissions, min_size=1, max_size=5), resources, names, accesses)
def test_removing_a_grant_never_adds_a_permission(
    grants: list[Permission], resource: str, name: str, access: str
) -> None:
    before = is_allowed(grants, resource=resource, resource_id=name, access=access)  # type: ignore[arg-type]
    after = is_allowed(grants[1:], resource=resource, resource_id=name, access=access)  # type: ignore[arg-type]
    assert before or not after
