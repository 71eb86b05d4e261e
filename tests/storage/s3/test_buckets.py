"""Circle buckets: policy and lifecycle rule, against the real Ceph RADOS Gateway."""

from __future__ import annotations


def test_new_bucket_gets_policy_and_lifecycle(store, bucket):
    policy = store.client.get_bucket_policy(Bucket=bucket)["Policy"]
    assert "s3:ExistingObjectTag/public" in policy
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    days = store.settings.abort_incomplete_multipart_days
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == days
