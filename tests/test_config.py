"""Configuration: bad values stop CKAN with one message naming the option."""

from __future__ import annotations

import configparser
import importlib.util
import socket
from pathlib import Path

import pytest

from ckanext.dcor_depot import config

from .conftest import TEST_INI

# CKAN 2.11 reads the logging set-up from the top ini file only
LOGGING = """
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = INFO
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic
[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""


def ini_option(name: str) -> str:
    """An option as the run's ini file writes it (following ``use = config:``)."""
    path = Path(TEST_INI)
    while True:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        section = parser["app:main"]
        if name in section:
            return section[name]
        path = Path(section["use"].removeprefix("config:"))


def site_ini(tmp_path, options: dict[str, str]) -> Path:
    """The run's test ini plus ``options``, for ``ckan`` in a separate process."""
    ini = tmp_path / "site.ini"
    lines = ["[app:main]", f"use = config:{TEST_INI}"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    ini.write_text("\n".join(lines) + LOGGING)
    return ini


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("dcor_object_store.endpoint_url", "objectstore.example.org", "expected an http(s) URL"),
        ("dcor_object_store.endpoint_url", "https://h:99999", "expected an http(s) URL"),
        ("dcor_object_store.endpoint_url", "https://key:pw@h", "must not contain a user name"),
        ("dcor_object_store.public_endpoint_url", "s3.example.org", "expected an http(s) URL"),
        ("dcor_object_store.public_endpoint_url", "https://h/?x=1", "must not contain a query"),
        ("dcor_object_store.access_key_id", "", "required when dcor_object_store.endpoint_url"),
        ("dcor_object_store.secret_access_key", "", "required when"),
        ("dcor_object_store.bucket_name", "circle", "lacks the placeholder"),
        ("dcor_object_store.bucket_name", "Circle_{organization_id}", "not a valid S3 bucket"),
        ("dcor_object_store.ssl_verify", "maybe", "expected true, false or the absolute path"),
        ("dcor_object_store.ssl_verify", "/nonexistent/ca.pem", "cannot be read (No such file"),
        ("dcor_object_store.ssl_verify", "/etc/passwd", "holds no PEM certificate"),
        ("dcor_object_store.part_size_mib", "2", "from 5 to 512"),
        ("dcor_object_store.upload_concurrency", "0", "from 1 to 32"),
        ("ckanext.dcor_depot.upload_max_gib", "-1", "from 0 to 5120"),
        ("dcor_object_store.upload_concurrency", "100", "from 1 to 32"),
        ("dcor_object_store.abort_incomplete_multipart_days", "soon", "integer"),
        ("ckanext.dcor_depot.depots_path", "data/depots", "expected an absolute path"),
        ("ckanext.dcor_depot.users_depot_name", "../elsewhere", "single folder name"),
        ("ckanext.dcor_depot.figshare_api_url", "api.figshare.com/v2", "expected an http(s) URL"),
        (
            "dcor_object_store.upload_secret_access_key",
            "",
            "required when dcor_object_store.upload_access_key_id is set",
        ),
        ("dcor_object_store.staging_bucket", "Staging_Bucket", "not a valid S3 bucket name"),
        ("dcor_object_store.staging_bucket", "{circle-prefix}staging", "begins like a circle's"),
    ],
)
def test_bad_value_stops_ckan_with_a_clear_message(tmp_path, key, value, expected, run_ckan):
    prefix = ini_option("dcor_object_store.bucket_name").split("{")[0]
    value = value.replace("{circle-prefix}", prefix)
    result = run_ckan(site_ini(tmp_path, {key: value}), "dcor-check-object-store")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{key}:" in output
    assert expected in output
    assert "Traceback" not in output
    assert "botocore" not in output


def test_without_endpoint_s3_is_off_and_the_log_says_so_once(tmp_path, run_ckan):
    result = run_ckan(
        site_ini(tmp_path, {"dcor_object_store.endpoint_url": ""}), "dcor-check-object-store"
    )
    assert result.returncode == 1
    assert "No object store configured" in result.stderr
    assert result.stderr.count("S3 features") == 1


@pytest.mark.usefixtures("with_plugins")
def test_path_options_and_their_defaults():
    assert config.users_depot_name() == f"users-{socket.gethostname()}"
    assert config.depots_path() == Path(ini_option("ckanext.dcor_depot.depots_path"))
    assert config.tmp_dir() == Path(ini_option("ckanext.dcor_depot.tmp_dir"))
    assert config.local_backup_location() is None


@pytest.mark.usefixtures("with_plugins")
def test_the_store_certificate_is_verified_against_the_configured_ca_bundle(tmp_path, run_ckan):
    import certifi

    own_ca = config.s3_settings().ssl_verify  # the development gateway's private CA
    assert isinstance(own_ca, str)
    result = run_ckan(
        site_ini(tmp_path, {"dcor_object_store.ssl_verify": own_ca}), "dcor-check-object-store"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reachable, credentials accepted" in result.stdout
    # a bundle of other CAs (certifi's public ones) does not vouch for the gateway
    result = run_ckan(
        site_ini(tmp_path, {"dcor_object_store.ssl_verify": certifi.where()}),
        "dcor-check-object-store",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "TLS to https://" in output and "dcor_object_store.ssl_verify" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("storage", ["resources", "default"])
def test_ckan_file_storages_for_resources_stop_ckan_naming_the_options(tmp_path, storage, run_ckan):
    """CKAN 2.12 hands resource files to a storage named by ckan.files.default_storages.resource,
    or to one it derives from the default storage; the depot's jobs would never find them."""
    options = {
        f"ckan.files.storage.{storage}.type": "ckan:fs",
        f"ckan.files.storage.{storage}.path": str(tmp_path / "files"),
        f"ckan.files.storage.{storage}.initialize": "true",
    }
    result = run_ckan(site_ini(tmp_path, options), "dcor-check-object-store")
    output = result.stdout + result.stderr
    if importlib.util.find_spec("ckan.lib.files") is None:
        # CKAN 2.11 has no file storages: the options mean nothing there
        assert result.returncode == 0, output
        assert "reachable, credentials accepted" in output
        return
    assert result.returncode == 1, output
    assert f"ckan.files.storage.{storage}.* gives resource files to CKAN's file storage" in output
    assert "which dcor_depot does not support" in output
    assert "Traceback" not in output
