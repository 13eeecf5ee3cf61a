"""streamvl.storage.objectstore: database URIs and LanceDB storage_options, no network."""

import pickle

import pytest

from streamvl.errors import ConfigError
from streamvl.storage.objectstore import StorageConfig, StorageTarget, resolve, split_uri, storage_config

KEY, SECRET, TOKEN = "AKIAEXAMPLEKEYID0001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRET", "IQoJb3JpZ2luX2VjSESSION"
AWS_ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_REGION": "eu-west-1"}


@pytest.mark.parametrize("db, scheme, uri", [
    ("./streamvl-db", "file", "./streamvl-db"),
    ("/data/db", "file", "/data/db"),
    ("file:///data/db", "file", "/data/db"),
    ("s3://bucket/prefix/db/", "s3", "s3://bucket/prefix/db"),
    ("s3://my.bucket-1", "s3", "s3://my.bucket-1"),
    ("S3://bucket/x", "s3", "s3://bucket/x"),
    ("gs://bucket_a/db", "gs", "gs://bucket_a/db"),
    ("az://container/db", "az", "az://container/db"),
])
def test_accepted_locations(db, scheme, uri):
    assert split_uri(db) == (scheme, uri)


@pytest.mark.parametrize("db, words", [
    ("", "empty"),
    ("http://host/db", "unsupported database URI scheme 'http'"),
    ("db://remote-db", "unsupported"),
    ("s3+ddb://bucket/db?ddbTableName=t", "unsupported"),
    ("memory://x", "unsupported"),
    ("s3:///prefix", "invalid bucket"),
    ("s3://Bucket/x", "invalid bucket"),
    ("s3://b/x", "invalid bucket"),  # S3 bucket names have 3..63 characters
    ("az://two--dashes/x", "invalid bucket"),
    ("s3://bucket/x?versionId=1", "query or fragment"),
    ("file://otherhost/db", "file:///absolute/path"),
])
def test_rejected_locations_name_the_problem(db, words):
    with pytest.raises(ConfigError) as err:
        split_uri(db)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_credentials_in_the_uri_are_refused_without_being_echoed():
    with pytest.raises(ConfigError, match="credentials in the database URI") as err:
        resolve(f"s3://{KEY}:{SECRET}@bucket/db", env={})
    assert SECRET not in str(err.value) and KEY not in str(err.value)
    assert "s3://bucket/db" in str(err.value)


def test_local_path_has_no_storage_options():
    target = resolve("./db", env=AWS_ENV)
    assert target.local and target.uri == "./db" and target.connect_kwargs() == {}


def test_a_storage_table_with_a_local_path_is_a_mistake():
    with pytest.raises(ConfigError, match="local path"):
        resolve("./db", {"region": "eu-west-1"}, env={})


def test_s3_options_from_the_standard_variables_and_http_from_an_http_endpoint():
    target = resolve("s3://bucket/db", env=AWS_ENV)
    assert target.scheme == "s3" and not target.local
    assert target.connect_kwargs() == {"storage_options": {
        "aws_endpoint": "http://127.0.0.1:9000", "aws_access_key_id": KEY, "aws_secret_access_key": SECRET,
        "aws_region": "eu-west-1", "allow_http": "true"}}


@pytest.mark.parametrize("env", [
    {"AWS_ALLOW_HTTP": "true"},  # no endpoint: AWS itself, https only, whatever AWS_ALLOW_HTTP says
    {"AWS_ALLOW_HTTP": "true", "AWS_ENDPOINT_URL": "https://s3.example.net"},
])
def test_plain_http_only_when_the_endpoint_says_http(env):
    assert resolve("s3://bucket/db", env=env).options["allow_http"] == "false"


def test_endpoint_variable_precedence_and_trailing_slash():
    env = {"AWS_ENDPOINT": "http://c:1", "AWS_ENDPOINT_URL": "http://b:1", "AWS_ENDPOINT_URL_S3": "https://a:1/"}
    assert resolve("s3://bucket", env=env).options["aws_endpoint"] == "https://a:1"
    assert resolve("s3://bucket", env={"AWS_DEFAULT_REGION": "x-1"}).options["aws_region"] == "x-1"


@pytest.mark.parametrize("endpoint", ["ftp://host", "127.0.0.1:9000", "http://", f"http://{KEY}:{SECRET}@host"])
def test_bad_endpoints_are_one_line_errors_without_keys(endpoint):
    with pytest.raises(ConfigError, match="invalid object store endpoint") as err:
        resolve("s3://bucket/db", {"endpoint": endpoint}, env={})
    assert SECRET not in str(err.value)


def test_storage_table_wins_over_the_environment():
    table = {"endpoint": "https://objects.internal:443", "region": "us-west-2", "access_key_id": "cfg-id",
             "secret_access_key": "cfg-secret", "session_token": "cfg-token"}
    options = resolve("s3://bucket/db", table, env=AWS_ENV | {"AWS_SESSION_TOKEN": TOKEN}).options
    assert options == {"aws_endpoint": "https://objects.internal:443", "aws_region": "us-west-2",
                       "aws_access_key_id": "cfg-id", "aws_secret_access_key": "cfg-secret",
                       "aws_session_token": "cfg-token", "allow_http": "false"}


def test_half_a_key_pair_is_an_error():
    with pytest.raises(ConfigError, match="access key id without its pair"):
        resolve("s3://bucket/db", env={"AWS_ACCESS_KEY_ID": KEY})
    with pytest.raises(ConfigError, match="secret access key without its pair"):
        resolve("s3://bucket/db", {"secret_access_key": SECRET}, env={})


def test_no_keys_leaves_lance_its_default_credential_chain():
    options = resolve("s3://bucket/db", env={}).options
    assert options == {"allow_http": "false"}


def test_gs_and_az_take_passthrough_options_only():
    table = {"options": {"google_service_account": "/etc/sa.json"}}
    assert resolve("gs://bucket/db", table, env=AWS_ENV).options == {
        "allow_http": "false", "google_service_account": "/etc/sa.json"}
    with pytest.raises(ConfigError, match="apply to s3:// only"):
        resolve("az://container/db", {"endpoint": "http://127.0.0.1:10000"}, env={})


@pytest.mark.parametrize("key", ["allow_http", "aws_endpoint", "ALLOW_HTTP", "aws_secret_access_key"])
def test_passthrough_cannot_override_the_managed_options(key):
    with pytest.raises(ConfigError, match=r"\[storage.options\] must not set"):
        resolve("s3://bucket/db", {"options": {key: "x"}}, env={})


def test_unknown_storage_keys_are_named():
    with pytest.raises(ConfigError, match=r"invalid \[storage\] table: secret: Extra inputs"):
        storage_config({"secret": SECRET})


def test_reprs_and_errors_never_show_keys():
    table = {"secret_access_key": SECRET, "access_key_id": KEY, "session_token": TOKEN,
             "options": {"aws_sse_kms_key_id": "kms-secret-id"}}
    target = resolve("s3://bucket/db", table, env={})
    config = storage_config(table)
    for text in (repr(target), str(target), repr(config), str(config), str(target.redacted()),
                 config.model_dump_json()):
        for secret in (SECRET, KEY, TOKEN, "kms-secret-id"):
            assert secret not in text, text
    assert target.redacted()["aws_secret_access_key"] == "***"
    assert target.redacted()["allow_http"] == "false"  # what is not a credential stays readable
    assert target.options["aws_secret_access_key"] == SECRET  # ... and the real value still reaches LanceDB


def test_storage_config_survives_pickling_with_its_values():
    """A Store ships its [storage] table to Ray actors by pickling: the secret must arrive intact."""
    config = pickle.loads(pickle.dumps(StorageConfig(secret_access_key=SECRET, access_key_id=KEY)))
    assert resolve("s3://bucket", config, env={}).options["aws_secret_access_key"] == SECRET


def test_target_is_a_value():
    assert StorageTarget("s3://b/x", "s3", {"a": "1"}) == StorageTarget("s3://b/x", "s3", {"a": "1"})
