"""torchrec is installed without its CUDA fbgemm-gpu requirement; the CPU build must load and run."""

import pytest
import torch

pytestmark = pytest.mark.integration


def test_embedding_bag_collection_forward_on_cpu():
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="user", embedding_dim=8, num_embeddings=100, feature_names=["user_id"]),
            EmbeddingBagConfig(name="pin", embedding_dim=8, num_embeddings=1000, feature_names=["pin_ids"]),
        ],
        device=torch.device("cpu"),
    )
    # two samples: user ids (one each) and a bag of engaged pins (2 and 3 ids)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "pin_ids"],
        values=torch.tensor([4, 7, 10, 11, 12, 13, 14]),
        lengths=torch.tensor([1, 1, 2, 3]),
    )
    out = ebc(kjt)
    assert out["user_id"].shape == (2, 8) and out["pin_ids"].shape == (2, 8)
    pin_table = ebc.embedding_bags["pin"].weight
    expected = pin_table[[12, 13, 14]].sum(0)  # the default pooling is a sum over the bag
    torch.testing.assert_close(out["pin_ids"][1], expected)
    out["pin_ids"].sum().backward()
    assert pin_table.grad is not None
