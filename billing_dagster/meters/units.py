"""Each meter's unit and, for meters with a single priced kind, that kind's natural id.

Shared by the catalog (which validates kinds and prices against them) and the meters (which
attribute usage to them). AWS meters also have two stub kinds that hold usage nobody can be
charged for yet: ``untagged`` and ``unknown-instance``.
"""

METER_UNITS: dict[str, str] = {
    "cfapps": "MiB-seconds",
    "cfservices": "instance-seconds",
    "rds_storage": "GiB-seconds",
    "opensearch_storage": "GiB-seconds",
    "s3_storage": "byte-seconds",
    "ses_sends": "sends",
    "ses_attachment_bytes": "bytes",
}

SINGLE_KINDS: dict[str, str] = {
    "cfapps": "app-memory",
    "rds_storage": "allocated-storage",
    "opensearch_storage": "ebs-storage",
    "s3_storage": "stored-bytes",
    "ses_sends": "sends",
    "ses_attachment_bytes": "attachment-bytes",
}

UNTAGGED = "untagged"  # an AWS resource without an Instance GUID tag
UNKNOWN_INSTANCE = "unknown-instance"  # its tag names no service instance landed from CF
