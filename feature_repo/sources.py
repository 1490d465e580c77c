"""Where the features come from: parquet files written by the `features` step, and a push source for sequences.

Paths are relative to the repository directory, not absolute and not read from an environment variable: Feast 0.67
resolves a relative FileSource path against the store's `repo_path` at every read (`FileSource.get_uri_for_file_path`),
so the registry records `data/<name>.parquet` and each copy of this directory reads its own files. An environment
variable would be baked into the registry as an absolute path at `feast apply` time, and two stores built in one
process (a pipeline run and its test) would then share whatever the variable said when the modules were first imported.
"""

from feast import FileSource, PushSource

# Every row is stamped with the cut-off the features were computed at; materializing a window around it loads them.
TIMESTAMP = "event_timestamp"

user_profile_source = FileSource(
    name="user_profile_source",
    path="data/user_profile.parquet",
    timestamp_field=TIMESTAMP,
    description="One row per user: segment, declared interests and action counts up to the cut-off",
)

pin_features_source = FileSource(
    name="pin_features_source",
    path="data/pin_features.parquet",
    timestamp_field=TIMESTAMP,
    description="One row per pin created before the cut-off: content attributes and engagement up to it",
)

# The push source's batch source holds the snapshot of every user's sequence at the cut-off; the stream processor
# later pushes fresher sequences through `user_action_sequence_push` straight into the online store.
user_action_sequence_source = FileSource(
    name="user_action_sequence_source",
    path="data/user_action_sequence.parquet",
    timestamp_field=TIMESTAMP,
    description="Each user's last actions (newest first) as of the cut-off",
)

user_action_sequence_push = PushSource(
    name="user_action_sequence_push",
    batch_source=user_action_sequence_source,
    description="Realtime user-action sequences, written to the online store as actions happen",
)
