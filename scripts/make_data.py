"""Write the shipped financial-sentiment data set (FinLoRA JSONL) from its seed.

    python scripts/make_data.py        # writes data/sentiment_train.jsonl, data/sentiment_test.jsonl

tests/test_shipped_assets.py regenerates both in memory and checks they equal the files.
"""
import os
import sys

from minilora.data import generate_sentiment, write_jsonl

N_TRAIN, N_TEST, SEED = 2000, 300, 2024
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def main() -> int:
    train, test = generate_sentiment(N_TRAIN, N_TEST, SEED)
    write_jsonl(os.path.join(DATA, "sentiment_train.jsonl"), train)
    write_jsonl(os.path.join(DATA, "sentiment_test.jsonl"), test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {os.path.normpath(DATA)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
