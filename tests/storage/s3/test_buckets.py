"""Circle buckets: policy and lifecycle rule, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import json

from ckanext.dcor_depot.storage.s3 import ObjectStore
from ckanext.dcor_depot.storage.s3.buckets import public_read_policy


def test_new_bucket_gets_policy_and_lifecycle(store, bucket):
    policy = store.client.get_bucket_policy(Bucket=bucket)["Policy"]
    assert "s3:ExistingObjectTag/public" in policy
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    days = store.settings.abort_incomplete_multipart_days
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == days


def test_an_operators_statement_and_rule_survive_a_new_process(store, bucket):
    """The extension adds its statement and its rule and keeps everything else."""
    policy = json.loads(store.client.get_bucket_policy(Bucket=bucket)["Policy"])
    operators_statement = {
        "Sid": "OperatorsReadOnlyUser",
        "Effect": "Allow",
        "Principal": {"AWS": ["arn:aws:iam:::user/dcor"]},
        "Action": ["s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}"],
    }
    policy["Statement"].append(operators_statement)
    store.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    operators_rule = {
        "ID": "operators-expire-scratch",
        "Status": "Enabled",
        "Filter": {"Prefix": "scratch/"},
        "Expiration": {"Days": 30},
    }
    store.client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, operators_rule]}
    )

    ObjectStore(store.settings).ensure_bucket(bucket)  # as a new process does

    policy = json.loads(store.client.get_bucket_policy(Bucket=bucket)["Policy"])
    sids = sorted(statement["Sid"] for statement in policy["Statement"])
    assert sids == ["AnonymousReadOfObjectsTaggedPublic", "OperatorsReadOnlyUser"]
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(rule["ID"] for rule in rules) == [
        "abort-incomplete-multipart-uploads",
        "operators-expire-scratch",
    ]
    kept = next(rule for rule in rules if rule["ID"] == "operators-expire-scratch")
    assert kept["Expiration"] == {"Days": 30}


def test_the_extensions_statement_and_rule_are_repaired(store, bucket):
    """A changed statement or rule of the extension's is set right again, the rest kept."""
    weakened = public_read_policy(bucket)
    del weakened["Statement"][0]["Condition"]  # every object readable
    store.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(weakened))
    store.client.delete_bucket_lifecycle(Bucket=bucket)

    ObjectStore(store.settings).ensure_bucket(bucket)

    assert json.loads(store.client.get_bucket_policy(Bucket=bucket)["Policy"]) == (
        public_read_policy(bucket)
    )
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [rule["ID"] for rule in rules] == ["abort-incomplete-multipart-uploads"]
