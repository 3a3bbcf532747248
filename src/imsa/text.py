"""How text travels through imsa, named once for every layer: the modality code of
transcripts, the annotation that holds token ids, and the id of a dropped word."""

TEXT = "l"  # the modality that raw transcripts belong to
TEXT_TOKENS = "text_bert"  # annotation: (N, 3, T) int64 token ids, attention mask, segment ids of the text steps (MMSA)
UNKNOWN_TOKEN = -1  # a token id no model reads: a dropped word, or every token of a missing text; the model puts its tokenizer's unknown token there
