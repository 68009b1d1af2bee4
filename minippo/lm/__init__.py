"""minippo.lm: language-model RLHF (chapters 6-9). (placeholder: being written)"""
