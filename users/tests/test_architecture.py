"""The layout's rules, checked on the import graph (grimp reads every import statement,
function-level ones included)."""

import itertools

import grimp
import pytest

PACKAGES = ("users", "offchat_backend", "dashboard")
# Lowest first. A layer may import the layers below it, never one above.
DOMAIN_LAYERS = ["users.models", "users.presence_rules", "users.selectors", "users.services"]
TRANSPORTS = ["users.api", "users.realtime", "users.ops", "users.tasks", "users.admin", "users.management"]
DOMAIN = [*DOMAIN_LAYERS, "users.exceptions"]
# The domain speaks neither HTTP nor DRF; simplejwt's tokens are the auth service's business.
NOT_FOR_THE_DOMAIN = {"rest_framework", "drf_spectacular", "django_filters", "corsheaders", "rest_framework_simplejwt"}
SIMPLEJWT_ALLOWED_IN = {"users.services.auth", "users.selectors.sessions"}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, include_external_packages=True)


def project_modules(graph):
    return sorted(module for module in graph.modules if module.split(".")[0] in PACKAGES)


def test_no_module_of_the_project_is_part_of_an_import_cycle(graph):
    cycles = [
        (module, imported)
        for module in project_modules(graph)
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] in PACKAGES and graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []


@pytest.mark.parametrize(("lower", "higher"), list(itertools.combinations(DOMAIN_LAYERS, 2)))
def test_a_domain_layer_never_reaches_a_layer_above_it(graph, lower, higher):
    assert graph.find_shortest_chain(importer=lower, imported=higher, as_packages=True) is None


@pytest.mark.parametrize(("domain", "transport"), list(itertools.product(DOMAIN, TRANSPORTS)))
def test_the_domain_never_reaches_a_transport(graph, domain, transport):
    assert graph.find_shortest_chain(importer=domain, imported=transport, as_packages=True) is None


def test_the_domain_imports_no_web_framework(graph):
    domain_modules = [module for module in project_modules(graph) if any(module.startswith(layer) for layer in DOMAIN)]
    assert len(domain_modules) >= 10  # the check reads the modules it means to
    offending = {
        (module, imported)
        for module in domain_modules
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] in NOT_FOR_THE_DOMAIN
        and not (imported == "rest_framework_simplejwt" and module in SIMPLEJWT_ALLOWED_IN)
    }
    assert offending == set()


def test_models_import_no_service_or_selector(graph):
    imported = graph.find_modules_directly_imported_by("users.models")
    assert {module for module in imported if module.startswith("users.")} == set()
