"""The fixed texts every variant is checked on: short queries to paragraphs past the local attention window."""
from __future__ import annotations

_SHORT = [
    "search_query: how do vaccines train the immune system?",
    "What is the capital of Australia?",
    "cheap flights from Lisbon to Oslo in March",
    "python list comprehension with condition",
    "Symptoms of iron deficiency in adults",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Cuál es la mejor época para visitar Kioto?",
    "GPU out of memory error when fine-tuning BERT",
    "a",
    "",
]

_SENTENCES = [
    "The committee postponed its decision on the new bridge until an independent survey of the riverbed is complete.",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a by-product.",
    "After the merger, the two banks kept separate brands in each country but combined their payment systems.",
    "She replaced the worn brake pads herself, following a video, and saved about a hundred euros in labour.",
    "Rotary position embeddings encode the position of a token by rotating pairs of query and key dimensions.",
    "The museum's new wing displays textiles from West Africa, some of them more than three centuries old.",
    "Our quarterly revenue grew by 12 percent, driven mostly by subscriptions in the education segment.",
    "If the sourdough starter smells of acetone, feed it more often and keep it somewhere slightly warmer.",
]

_PARAGRAPH_A = (
    "Edge servers run in places where a data centre would be impractical: a factory floor, a hospital ward, a "
    "retail store or the cabinet at the foot of a mobile mast. They have a few CPU cores, a modest amount of "
    "memory, and no accelerator. Software that runs on them must start quickly, stay within a fixed memory "
    "budget, and keep working when the network to the central cloud is slow or missing. Search and "
    "recommendation features on such machines depend on text embeddings, which turn a sentence or a document "
    "into a vector whose direction captures its meaning. Two texts about the same topic end up with vectors "
    "that point in nearly the same direction, so a nearest-neighbour search over stored vectors finds related "
    "documents even when they share no words with the query. "
)
_PARAGRAPH_B = (
    "The encoder reads the whole input at once. In most of its layers each token only looks at a window of "
    "nearby tokens, which keeps the cost of long documents under control; every third layer lets each token "
    "look at the entire sequence, so information still flows from one end of the document to the other. "
    "Position is not stored as a learned table but applied as a rotation of the query and key vectors, with "
    "a different base frequency for the local and the global layers. The feed-forward blocks use a gated "
    "activation, and none of the linear layers has a bias term. "
)
_PARAGRAPH_C = (
    "Quantization stores weights in eight bits instead of thirty-two. The model file becomes four times "
    "smaller and integer matrix multiplication is faster on processors with vector neural network "
    "instructions, but every rounding step moves the result a little. For retrieval what matters is whether "
    "the nearest neighbours of a query stay the same, and small errors spread over hundreds of dimensions "
    "usually leave the ranking intact. Still, a few layers are far more sensitive than the rest, and those "
    "are often kept in higher precision. "
)


def validation_texts() -> list[str]:
    """Texts of 1 to about 2,400 tokens; most long ones exceed a 128-token local attention window many times."""
    long_texts = [
        _PARAGRAPH_A,
        _PARAGRAPH_B + _PARAGRAPH_C,
        _PARAGRAPH_A + _PARAGRAPH_B,
        _PARAGRAPH_C + _PARAGRAPH_A + _PARAGRAPH_B,
        (_PARAGRAPH_B + _PARAGRAPH_A + _PARAGRAPH_C) * 2,
        # Past 2048 tokens, where a position rounded to float16 is no longer exact.
        (_PARAGRAPH_A + _PARAGRAPH_B + _PARAGRAPH_C) * 6,
    ]
    return _SHORT + _SENTENCES + long_texts
