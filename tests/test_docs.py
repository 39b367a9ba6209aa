"""The documentation a user reads stays true: every setting is documented, and every
document the README links to exists."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from kriten_api.settings import ApiSettings
from kriten_collector.settings import CollectorSettings
from kriten_common.kube import KubernetesSettings
from kriten_common.settings import is_secret
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.settings import IngressSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: list[type[BaseSettings]] = [
    ApiSettings,
    IngressSettings,
    DispatcherSettings,
    CollectorSettings,
    KubernetesSettings,
]


def _variables(*, with_earlier_names: bool) -> set[str]:
    """Every setting's variable; with the earlier names some are still read by."""
    found: set[str] = set()
    for cls in SETTINGS:
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices):
                choices = [c for c in alias.choices if isinstance(c, str)]
                found.update(choices if with_earlier_names else choices[:1])
            else:
                found.add(f"KRITEN_{name.upper()}")
    return found


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    variables = _variables(with_earlier_names=False)
    missing = sorted(v for v in variables if f"`{v}`" not in reference)
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_documented_settings_exist() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(KRITEN_[A-Z0-9_]+)`", reference))
    variables = _variables(with_earlier_names=True)
    # Every secret setting can also be read from a file (kriten_common.settings).
    variables |= {
        f"KRITEN_{name.upper()}_FILE"
        for cls in SETTINGS
        for name, info in cls.model_fields.items()
        if is_secret(info)
    }
    assert documented <= variables, f"documented but unknown: {sorted(documented - variables)}"


def test_readme_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?://)[^)#]+)\)", readme)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
