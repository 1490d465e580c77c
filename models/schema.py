"""The contract every layer shares about users' actions: the action and segment vocabularies and their codes, and the
realtime sequence's length and padding.

Dependency-free on purpose (no torch, numpy or data-layer imports), at the bottom of the import graph: the data
contracts, the feature build, the stream processor, the models and the servers all import these values instead of
declaring their own, since a second declaration that drifted would be cut or padded without an error. A trained
model records what it was built for (its config's `sequence.seq_len` and `n_segments`), and the ranking predictor
refuses a model that disagrees with this module (serving/ranking.py).
"""

ACTIONS: tuple[str, ...] = ("impression", "click", "repin", "hide")  # an action's code is its position here
SEQUENCE_ACTIONS: tuple[str, ...] = ("click", "repin", "hide")  # what a user did; impressions are not in a sequence
SEGMENTS: tuple[str, ...] = ("core", "casual", "new", "resurrected")  # seed 003's; all but core are "non-core"

SEQ_LEN = 100  # the realtime sequence: a user's last 100 actions, newest first (seed 003)
# The data's padding, in the feature store and the training examples: pin -1, action code 0, timestamp 0. Code 0 is
# "impression", which never appears in a sequence, so the pin id is the padding signal.
PAD_PIN = -1
PAD_ACTION = ACTIONS.index("impression")
# The models' padding code for actions: one row past the real ones in the action embedding table
# (models/ranking/sequence.py `model_actions` maps the data's padding to it).
N_ACTIONS = len(ACTIONS)
PAD_INDEX = N_ACTIONS
N_SEGMENTS = len(SEGMENTS)
