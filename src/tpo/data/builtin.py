"""The built-in instruction set: 1600 templated prompts with verifiable constraints.

TPO needs instructions a judge can score without an API key, so each prompt here is a topic
(33 of them) crossed with a task type (10; the task is the category) plus 1-3 constraints the
verifier judge checks, phrased in plain English at the end of the prompt. The set is meant for
a 135M-parameter model: constraints are drawn mostly from the kinds such a model sometimes meets
(keywords, lowercase, word limits of 30-120 words, a fixed first or last phrase, no commas,
bullets, a title), so that its samples differ in score and preference pairs carry signal. Rarer,
harder kinds keep the judge honest without dominating: JSON, quotation, uppercase, and kinds
that count (sentences, a keyword's frequency, numbered points, words in capitals), place (a
keyword in the first sentence, the word that opens a paragraph) or shape (numbered sections),
where small models state the count or the rule and then miss it.

The sizes serve a run of several iterations on fresh prompts: 1200 train prompts hold e.g. 4
iterations x 96 plus a validation slice of 200 (cut by the data stage from data.train), and the
400 held-out prompts give a held-out mean whose standard error is ~0.02 at 300 prompts.

Constraints that contradict each other are never combined: a fixed list of incompatible pairs,
plus checks that the fixed phrases and keywords obey the other rules (no "Is there anything
else...?" ending under a lowercase rule, no excluded word inside a required phrase).

Generation is deterministic in the seed. The split is by (topic, task, constraint types): no such
combination occurs twice in the whole set, so held-out prompts are never a train prompt with
other wording. `python -m tpo.data.builtin` rewrites the JSONL files shipped next to this module;
a test checks they equal a fresh generation with seed 0.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpo.constraints import contains_word, count_words
from tpo.records import Instruction

N_TRAIN = 1200
N_HELDOUT = 400


@dataclass(frozen=True)
class Topic:
    name: str
    area: str  # fits "getting started with {area}" and "trying {area} for the first time"
    concepts: tuple[str, ...]  # fits "Explain {concept}."
    products: tuple[str, ...]
    pair: tuple[str, str]
    keywords: tuple[str, ...]  # single lowercase words a response on the topic could use


# fmt: off
TOPICS: tuple[Topic, ...] = (
    Topic("astronomy", "stargazing",
          ("why the Moon has phases", "how stars are born", "what a black hole is"),
          ("a beginner telescope", "a glow-in-the-dark star map"), ("planets", "stars"),
          ("sky", "moon", "light", "orbit", "night", "telescope")),
    Topic("cooking", "home cooking",
          ("why bread dough rises", "how salt changes flavor", "why onions make you cry"),
          ("a cast-iron skillet", "a set of chef knives"), ("baking", "frying"),
          ("kitchen", "recipe", "taste", "salt", "oven", "fresh")),
    Topic("travel", "travelling on a budget",
          ("how jet lag affects the body", "why travel insurance exists", "how time zones work"),
          ("a lightweight travel backpack", "a universal power adapter"), ("trains", "planes"),
          ("journey", "map", "city", "passport", "luggage", "adventure")),
    Topic("history", "local history",
          ("why the Roman Empire fell", "how the printing press changed the world",
           "what the Silk Road was"),
          ("an illustrated history atlas", "a replica ancient coin set"),
          ("ancient Egypt", "ancient Greece"),
          ("empire", "century", "king", "past", "trade", "war")),
    Topic("health", "healthy eating",
          ("why sleep matters for health", "how vaccines train the immune system",
           "what blood pressure measures"),
          ("a reusable water bottle", "a fitness tracker"), ("walking", "running"),
          ("body", "sleep", "water", "heart", "habit", "energy")),
    Topic("sport", "playing tennis",
          ("why athletes warm up before exercise", "how scoring works in tennis",
           "the offside rule in football"),
          ("a pair of running shoes", "a lightweight tennis racket"), ("football", "basketball"),
          ("team", "ball", "coach", "game", "practice", "score")),
    Topic("finance", "personal budgeting",
          ("how compound interest works", "what inflation is", "why people diversify investments"),
          ("a budgeting app", "a piggy bank for children"), ("saving", "investing"),
          ("money", "budget", "bank", "interest", "savings", "spend")),
    Topic("music", "learning the guitar",
          ("how musical scales work", "what rhythm is", "why some chords sound sad"),
          ("an acoustic guitar", "a pair of studio headphones"), ("the piano", "the violin"),
          ("song", "melody", "rhythm", "guitar", "note", "sound")),
    Topic("gardening", "vegetable gardening",
          ("how plants make food from sunlight", "why compost helps soil",
           "how bees pollinate flowers"),
          ("a raised garden bed kit", "a watering can"), ("tomatoes", "potatoes"),
          ("soil", "seed", "water", "garden", "leaf", "sun")),
    Topic("technology", "programming",
          ("how the internet sends data", "what a computer processor does",
           "how passwords are kept safe"),
          ("a wireless keyboard", "a portable phone charger"), ("laptops", "tablets"),
          ("computer", "code", "data", "screen", "network", "software")),
    Topic("ocean", "snorkelling",
          ("why the ocean is salty", "how tides work", "how coral reefs form"),
          ("a snorkel mask", "a waterproof camera"), ("dolphins", "sharks"),
          ("ocean", "wave", "fish", "coral", "salt", "tide")),
    Topic("weather", "watching the weather",
          ("how rainbows form", "why thunder follows lightning", "what causes wind"),
          ("a home weather station", "a compact umbrella"), ("hurricanes", "tornadoes"),
          ("rain", "cloud", "storm", "wind", "sun", "forecast")),
    Topic("pets", "caring for a dog",
          ("why cats purr", "how dogs learn tricks", "why pets need regular vet visits"),
          ("an automatic pet feeder", "a cozy dog bed"), ("cats", "dogs"),
          ("pet", "dog", "cat", "walk", "food", "play")),
    Topic("art", "watercolor painting",
          ("how colors mix", "what perspective means in drawing", "why artists keep sketchbooks"),
          ("a set of watercolor paints", "a hardcover sketchbook"), ("painting", "photography"),
          ("color", "brush", "paint", "canvas", "light", "artist")),
    Topic("environment", "recycling at home",
          ("how the greenhouse effect works", "why forests matter for the climate",
           "how plastic waste harms wildlife"),
          ("a set of reusable shopping bags", "a home compost bin"),
          ("solar power", "wind power"),
          ("planet", "waste", "energy", "tree", "climate", "recycle")),
    Topic("space", "following space missions",
          ("how rockets reach orbit", "why astronauts float in space",
           "what the International Space Station does"),
          ("a model rocket kit", "a pack of freeze-dried astronaut ice cream"),
          ("the Moon", "Mars"),
          ("rocket", "orbit", "astronaut", "launch", "space", "planet")),
    Topic("languages", "learning a new language",
          ("why children learn languages quickly", "how grammar differs between languages",
           "what an accent is"),
          ("a pocket phrasebook", "a language learning app"),
          ("learning with an app", "learning with a teacher"),
          ("word", "grammar", "practice", "speak", "listen", "language")),
    Topic("fitness", "strength training",
          ("how muscles grow", "why stretching helps", "what a heart rate zone is"),
          ("a set of adjustable dumbbells", "a yoga mat"), ("yoga", "pilates"),
          ("muscle", "exercise", "stretch", "strength", "rest", "breath")),
    Topic("photography", "photography",
          ("how a camera lens focuses light", "what the rule of thirds is",
           "why photos look blurry in low light"),
          ("a compact camera", "a travel tripod"), ("film cameras", "digital cameras"),
          ("camera", "photo", "light", "lens", "frame", "shadow")),
    Topic("literature", "reading novels",
          ("what makes a good plot", "why poems use rhythm", "what a metaphor is"),
          ("an e-reader", "a bookshop gift card"), ("printed books", "audiobooks"),
          ("book", "story", "page", "reader", "author", "chapter")),
    Topic("chemistry", "kitchen chemistry experiments",
          ("why ice floats on water", "how soap removes grease", "what happens when iron rusts"),
          ("a chemistry set for children", "a digital kitchen scale"), ("acids", "bases"),
          ("atom", "water", "reaction", "mix", "heat", "bubble")),
    Topic("biology", "bird watching",
          ("how birds migrate", "why leaves change color in autumn", "how the heart pumps blood"),
          ("a pair of binoculars", "a bird feeder"), ("frogs", "toads"),
          ("bird", "nest", "feather", "wing", "tree", "song")),
    Topic("geography", "hiking in the mountains",
          ("how mountains form", "why deserts are dry", "how rivers shape valleys"),
          ("a pair of hiking boots", "a trail map of a national park"), ("deserts", "rainforests"),
          ("river", "stone", "mountain", "valley", "trail", "map")),
    Topic("home", "decorating a small apartment",
          ("why houses need insulation", "how bridges carry heavy loads",
           "what makes a room feel cozy"),
          ("a foldable desk", "a soft reading lamp"), ("renting a home", "buying a home"),
          ("room", "wall", "light", "window", "space", "home")),
    Topic("tea and coffee", "brewing tea",
          ("how caffeine affects the brain", "why green tea and black tea taste different",
           "how coffee beans are roasted"),
          ("a French press", "a ceramic teapot"), ("tea", "coffee"),
          ("cup", "leaf", "water", "morning", "aroma", "warm")),
    Topic("study", "studying for exams",
          ("how memory works", "why breaks help learning", "what active recall is"),
          ("a weekly planner notebook", "a pair of noise-cancelling headphones"),
          ("studying alone", "studying in a group"),
          ("exam", "notes", "focus", "memory", "study", "plan")),
    Topic("work", "working from home",
          ("why teamwork matters at work", "what a resume is for", "how time blocking works"),
          ("an ergonomic office chair", "a standing desk"),
          ("working from home", "working in an office"),
          ("team", "meeting", "task", "office", "goal", "schedule")),
    Topic("mindfulness", "meditation",
          ("how breathing exercises reduce stress", "why gratitude can improve mood",
           "what mindfulness means"),
          ("a meditation cushion", "a guided journal"), ("meditation", "journaling"),
          ("calm", "breath", "mind", "peace", "stress", "moment")),
    Topic("transport", "cycling to work",
          ("how electric cars work", "why bicycles stay upright", "how traffic lights are timed"),
          ("a folding bicycle", "a bright bike light"), ("electric cars", "petrol cars"),
          ("road", "wheel", "bike", "ride", "traffic", "safety")),
    Topic("film", "watching classic films",
          ("how movies create special effects", "why soundtracks matter in films",
           "what a film director does"),
          ("a home projector", "a box of gourmet popcorn"), ("the cinema", "streaming at home"),
          ("film", "scene", "screen", "actor", "story", "camera")),
    Topic("games", "playing chess",
          ("how chess pieces move", "why board games are good for families",
           "what strategy means in games"),
          ("a wooden chess set", "a family board game"), ("chess", "checkers"),
          ("board", "piece", "move", "player", "game", "strategy")),
    Topic("clothing", "sewing your own clothes",
          ("how cotton is turned into fabric", "why wool keeps you warm",
           "what a capsule wardrobe is"),
          ("a waterproof jacket", "a pair of wool socks"), ("cotton", "wool"),
          ("fabric", "wool", "color", "style", "thread", "warm")),
    Topic("fossils", "fossil hunting",
          ("how fossils form", "why the dinosaurs died out", "how scientists date old bones"),
          ("a fossil excavation kit", "a dinosaur encyclopedia"), ("dinosaurs", "modern birds"),
          ("fossil", "bone", "rock", "ancient", "dig", "dinosaur")),
)
# fmt: on

TASKS: dict[str, tuple[str, ...]] = {
    "explanation": ("Explain {concept} in simple terms.", "Briefly explain {concept} to a child."),
    "tips": (
        "Give practical tips for someone getting started with {area}.",
        "Share some beginner tips about {area}.",
    ),
    "email": (
        "Write a short email inviting a colleague to a workshop about {area}.",
        "Write a short email to a friend recommending {product}.",
    ),
    "letter": (
        "Write a short letter to a local newspaper explaining why {area} matters.",
        "Write a short thank-you letter to a teacher who once explained {concept} to you.",
    ),
    "story": (
        "Write a very short story about someone trying {area} for the first time.",
        "Write a very short story in which {product} plays an important role.",
    ),
    "product_description": (
        "Write a product description for {product}.",
        "Write a short advertisement for {product}.",
    ),
    "poem": ("Write a short poem about {concept}.", "Write a short poem celebrating {area}."),
    "advice": (
        "Give advice to someone who feels nervous about trying {area} for the first time.",
        "A friend wants to get into {area} but has little free time. What do you advise?",
    ),
    "comparison": ("Compare {a} and {b}.", "What are the main differences between {a} and {b}?"),
    "summary": (
        "Give a short summary, for a beginner, of {concept}.",
        "Give a brief overview of {concept}.",
    ),
}

# How often each constraint type is drawn: mostly kinds a small model can sometimes meet.
WEIGHTS: dict[str, int] = {
    "keywords_include": 14,
    "word_count": 14,
    "ends_with": 10,
    "lowercase": 8,
    "starts_with": 8,
    "no_commas": 8,
    "title": 8,
    "bullets": 6,
    "keywords_exclude": 5,
    "postscript": 4,
    "letter_frequency": 3,
    "highlights": 3,
    "placeholders": 3,
    "paragraphs": 3,
    "quotation": 2,
    "uppercase": 2,
    "json_format": 1,
    "sentence_count": 3,
    "keyword_in_first_sentence": 3,
    "keyword_frequency": 2,
    "numbered_list": 2,
    "capital_words": 2,
    "paragraph_first_word": 2,
    "sections": 1,
}

# Types that only make sense for some tasks (bullets in a poem would be odd).
ONLY_FOR: dict[str, tuple[str, ...]] = {
    "bullets": (
        "explanation",
        "tips",
        "email",
        "product_description",
        "advice",
        "comparison",
        "summary",
    ),
    "placeholders": ("email", "letter", "product_description"),
    "postscript": ("email", "letter", "advice"),
    "json_format": ("tips", "product_description", "comparison"),
    "numbered_list": ("explanation", "tips", "advice", "comparison", "summary"),
    "sections": ("explanation", "tips", "letter", "advice", "comparison", "summary"),
    "paragraph_first_word": tuple(t for t in TASKS if t != "poem"),
}

_JSON_FRIENDLY = (
    "json_format",
    "keywords_include",
    "keywords_exclude",
    "word_count",
    "keyword_frequency",
)
_LAYOUTS = ("bullets", "numbered_list", "paragraphs", "paragraph_first_word", "sections")
INCOMPATIBLE: tuple[tuple[str, str], ...] = (
    ("lowercase", "uppercase"),
    ("ends_with", "postscript"),
    ("starts_with", "title"),
    ("capital_words", "lowercase"),
    ("capital_words", "uppercase"),
    # one layout per answer; every line of a layout is a sentence too
    *((a, b) for i, a in enumerate(_LAYOUTS) for b in _LAYOUTS[i + 1 :]),
    *(("sentence_count", other) for other in (*_LAYOUTS, "title", "postscript")),
    *(
        ("quotation", other)
        for other in ("starts_with", "ends_with", "postscript", "title", *_LAYOUTS)
    ),
    *(("json_format", other) for other in WEIGHTS if other not in _JSON_FRIENDLY),
)

ENDINGS = (
    "Is there anything else I can help with?",
    "Thank you for reading.",
    "That is all for now.",
    "Have a wonderful day!",
    "Let me know if you have any questions.",
)
# Opening words by task, so a letter starts like a letter; other tasks use the "" entry.
STARTS: dict[str, tuple[str, ...]] = {
    "email": ("Dear", "Hello", "Hi"),
    "letter": ("Dear", "To the editor"),
    "story": ("Once upon a time", "One morning", "Long ago"),
    "poem": ("When", "The", "In"),
    "product_description": ("Introducing", "Meet", "Here is"),
    "": ("Here is", "Sure", "Of course", "Great question", "In short"),
}
MARKERS = ("P.S.", "P.P.S.")
LETTERS = ("b", "k", "w", "y", "p", "g", "v")
SECTION_MARKERS = ("SECTION", "PART")
PARAGRAPH_WORDS = ("Also", "Next", "However", "Finally", "Then")
ORDINALS = {2: "second", 3: "third"}


def _draw_params(kind: str, task: str, topic: Topic, rng: random.Random) -> dict[str, Any]:
    if kind in ("keywords_include", "keywords_exclude"):
        return {"keywords": rng.sample(list(topic.keywords), rng.choice([1, 2]))}
    if kind == "word_count":
        if rng.random() < 0.25:
            return {"relation": "at least", "n": rng.choice([30, 40, 50])}
        return {"relation": "at most", "n": rng.choice([40, 50, 60, 80, 100, 120])}
    if kind == "bullets":
        return {"n": rng.choice([2, 3, 4, 5])}
    if kind == "paragraphs":
        return {"n": rng.choice([2, 3])}
    if kind in ("placeholders", "highlights"):
        return {"n": rng.choice([1, 2, 3])}
    if kind == "ends_with":
        return {"phrase": rng.choice(ENDINGS)}
    if kind == "starts_with":
        return {"phrase": rng.choice(STARTS.get(task, STARTS[""]))}
    if kind == "postscript":
        return {"marker": rng.choice(MARKERS)}
    if kind == "letter_frequency":
        return {"letter": rng.choice(LETTERS), "relation": "at least", "n": rng.randint(3, 6)}
    return _draw_counts_and_places(kind, topic, rng)


def _draw_counts_and_places(kind: str, topic: Topic, rng: random.Random) -> dict[str, Any]:
    if kind == "sentence_count":
        if rng.random() < 0.25:
            return {"relation": "at least", "n": rng.choice([3, 4, 5])}
        return {"relation": "at most", "n": rng.choice([2, 3, 4, 5])}
    if kind == "keyword_frequency":
        return {
            "keyword": rng.choice(topic.keywords),
            "relation": "at least",
            "n": rng.choice([2, 3]),
        }
    if kind == "keyword_in_first_sentence":
        return {"keyword": rng.choice(topic.keywords)}
    if kind == "numbered_list":
        return {"n": rng.choice([2, 3, 4, 5])}
    if kind == "capital_words":
        return {"relation": "at least", "n": rng.choice([2, 3, 4])}
    if kind == "paragraph_first_word":
        return {"n": rng.choice([2, 2, 3]), "word": rng.choice(PARAGRAPH_WORDS)}
    if kind == "sections":
        return {"marker": rng.choice(SECTION_MARKERS), "n": rng.choice([2, 3])}
    return {}


def _quoted_list(words: list[str], joiner: str) -> str:
    quoted = [f"'{word}'" for word in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _keywords(c: dict[str, Any], noun: str, joiner: str) -> str:
    return f"{noun}{'s' if len(c['keywords']) > 1 else ''} {_quoted_list(c['keywords'], joiner)}"


# Type -> the English sentence that asks for a constraint of that type.
SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "keywords_include": lambda c: f"Include the {_keywords(c, 'keyword', 'and')}.",
    "keywords_exclude": lambda c: f"Do not use the {_keywords(c, 'word', 'or')}.",
    "word_count": lambda c: f"Answer with {c['relation']} {c['n']} words.",
    "lowercase": lambda c: "Your entire answer must be in lowercase letters; no capital letters.",
    "uppercase": lambda c: "Your entire answer must be in capital letters.",
    "ends_with": lambda c: (
        f'End your response with the exact phrase "{c["phrase"]}" and nothing after it.'
    ),
    "starts_with": lambda c: f'Start your response with the exact words "{c["phrase"]}".',
    "no_commas": lambda c: "Do not use any commas in your response.",
    "bullets": lambda c: (
        f"Your answer must contain exactly {_plural(c['n'], 'bullet point')} "
        'in markdown, each on its own line, such as "* This is a point."'
    ),
    "paragraphs": lambda c: (
        f"Write exactly {_plural(c['n'], 'paragraph')}, separated from each other by a blank line."
    ),
    "title": lambda c: (
        "Give your answer a title wrapped in double angular brackets, such as <<a short title>>."
    ),
    "quotation": lambda c: "Wrap your entire response in double quotation marks.",
    "placeholders": lambda c: (
        f"Include at least {_plural(c['n'], 'placeholder')} in square brackets, such as [name]."
    ),
    "highlights": lambda c: (
        f"Highlight at least {_plural(c['n'], 'section')} with markdown "
        "italics, such as *highlighted section*."
    ),
    "postscript": lambda c: (
        f"At the end of your response, add a postscript starting with {c['marker']}"
    ),
    "letter_frequency": lambda c: f"Use the letter '{c['letter']}' at least {c['n']} times.",
    "json_format": lambda c: (
        "Wrap your entire output in JSON format; you may use markdown code fences such as ```json."
    ),
    "sentence_count": lambda c: f"Answer in {c['relation']} {_plural(c['n'], 'sentence')}.",
    "keyword_in_first_sentence": lambda c: (
        f"Mention the word '{c['keyword']}' in your first sentence."
    ),
    "keyword_frequency": lambda c: f"Use the word '{c['keyword']}' at least {c['n']} times.",
    "numbered_list": lambda c: (
        f"Give exactly {_plural(c['n'], 'numbered point')}, each on its own line, such as "
        '"1. This is a point."'
    ),
    "capital_words": lambda c: (
        f"Write at least {_plural(c['n'], 'word')} entirely in capital letters, such as NOTE."
    ),
    "paragraph_first_word": lambda c: (
        f"Write at least {c['n']} paragraphs separated by blank lines; the {ORDINALS[c['n']]} "
        f'paragraph must start with the word "{c["word"]}".'
    ),
    "sections": lambda c: (
        f"Divide your answer into exactly {c['n']} sections, each starting with a line such as "
        f'"{c["marker"]} 1", numbered in order.'
    ),
}


def compatible(kinds: list[str]) -> bool:
    """No two of these constraint types are in `INCOMPATIBLE`."""
    return not any(a in kinds and b in kinds for a, b in INCOMPATIBLE)


def consistent(constraints: list[dict[str, Any]]) -> bool:
    """Compatible types, and the fixed phrases and keywords obey the other rules."""
    kinds = [c["type"] for c in constraints]
    literal = " ".join(c.get("phrase", c.get("marker", "")) for c in constraints)
    included = [w for c in constraints if c["type"] == "keywords_include" for w in c["keywords"]]
    included += [c[k] for c in constraints for k in ("keyword", "word") if k in c]
    excluded = [w for c in constraints if c["type"] == "keywords_exclude" for w in c["keywords"]]
    required = f"{literal} {' '.join(included)}"
    limits = [c["n"] for c in constraints if c["type"] == "word_count"]
    return (
        compatible(kinds)
        and not ("lowercase" in kinds and any(ch.isupper() for ch in literal))
        and not ("uppercase" in kinds and any(ch.islower() for ch in literal))
        and not ("no_commas" in kinds and "," in required)
        and not any(contains_word(required, word) for word in excluded)
        and all(count_words(required) + 10 <= n for n in limits)
    )


def _draw_constraints(task: str, topic: Topic, rng: random.Random) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    for _ in range(rng.choices([1, 2, 3], weights=[4, 4, 2])[0]):
        kinds = [
            kind
            for kind in WEIGHTS
            if task in ONLY_FOR.get(kind, (task,))
            and all(kind != c["type"] for c in chosen)
            and compatible([*(c["type"] for c in chosen), kind])
        ]
        kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        chosen.append({"type": kind, **_draw_params(kind, task, topic, rng)})
    return chosen


def _draw_text(task: str, topic: Topic, rng: random.Random) -> str:
    template = rng.choice(TASKS[task])
    return template.format(
        area=topic.area,
        concept=rng.choice(topic.concepts),
        product=rng.choice(topic.products),
        a=topic.pair[0],
        b=topic.pair[1],
    )


def build_instructions(seed: int = 0) -> tuple[list[Instruction], list[Instruction]]:
    """(train, heldout): 1200 and 400 instructions, no (topic, task, constraint types) shared."""
    rng = random.Random(seed)
    slots = [(topic, task) for topic in TOPICS for task in TASKS]
    drawn: list[tuple[str, str, list[dict[str, Any]]]] = []  # (category, text, constraints)
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    while len(drawn) < N_TRAIN + N_HELDOUT:
        before = len(drawn)
        rng.shuffle(slots)
        for topic, task in slots[: N_TRAIN + N_HELDOUT - len(drawn)]:
            for _attempt in range(50):
                constraints = _draw_constraints(task, topic, rng)
                key = (topic.name, task, tuple(sorted(c["type"] for c in constraints)))
                if key not in seen and consistent(constraints):
                    break
            else:
                continue
            seen.add(key)
            sentences = " ".join(SENTENCES[c["type"]](c) for c in constraints)
            drawn.append((task, f"{_draw_text(task, topic, rng)} {sentences}", constraints))
        if len(drawn) == before:
            raise RuntimeError("no new (topic, task, constraint types) could be drawn")
    rng.shuffle(drawn)

    def make(split: str, rows: list[tuple[str, str, list[dict[str, Any]]]]) -> list[Instruction]:
        return [
            Instruction(id=f"builtin-{split}-{i:04d}", text=text, category=task, constraints=cons)
            for i, (task, text, cons) in enumerate(rows, start=1)
        ]

    return make("train", drawn[N_HELDOUT:]), make("heldout", drawn[:N_HELDOUT])


def write_jsonl(instructions: list[Instruction], path: Path) -> None:
    lines = [json.dumps(instruction.to_dict()) + "\n" for instruction in instructions]
    path.write_text("".join(lines), encoding="utf-8")


def main() -> None:
    """Rewrite the shipped builtin_train.jsonl and builtin_heldout.jsonl (seed 0)."""
    train, heldout = build_instructions(seed=0)
    here = Path(__file__).parent
    for split, instructions in (("train", train), ("heldout", heldout)):
        write_jsonl(instructions, here / f"builtin_{split}.jsonl")
        print(f"wrote {len(instructions)} instructions to {here / f'builtin_{split}.jsonl'}")


if __name__ == "__main__":
    main()
