"""What students read first: the offline assistant's answers to the notebooks' prompts must make sense.

JSON mode honours the keys a prompt names; structured answers hold plausible values (a dish, a real
number of minutes, a film and its year); lists and steps are phrased grammatically and, for everyday
tasks, are right; arithmetic is exact. All of it stays deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import jsonschema
import pytest

from flotorch_nb import StructuredOutputError
from flotorch_nb._pipeline._recover import reask_message
from flotorch_nb.gateway import OfflineGateway

CHAT = "/api/openai/v1/chat/completions"
AUTH = {"Authorization": "Bearer answers-test-key"}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with OfflineGateway() as gw, httpx2.Client(base_url=gw.url, headers=AUTH, timeout=10) as c:
        yield c


def ask(client: httpx2.Client, messages: list[dict[str, Any]] | str, **extra: Any) -> str:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body = {"model": "offline/assistant", "messages": messages, **extra}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    assert content == client.post(CHAT, json=body).json()["choices"][0]["message"]["content"], "deterministic"
    return content


def ask_json(client: httpx2.Client, prompt: str) -> Any:
    return json.loads(ask(client, prompt, response_format={"type": "json_object"}))


def ask_schema(client: httpx2.Client, prompt: str, schema: dict[str, Any]) -> Any:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    value = json.loads(ask(client, prompt, response_format=fmt))
    jsonschema.validate(value, schema)
    return value


def _object(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


STRING, INTEGER = {"type": "string"}, {"type": "integer"}
STRINGS = {"type": "array", "items": STRING}


# -- JSON mode ----------------------------------------------------------------------------------------


def test_json_mode_honours_the_key_the_notebook_names(client: httpx2.Client) -> None:
    prompt = 'Return a JSON object whose key "colors" lists the three primary colours.'
    assert ask_json(client, prompt) == {"colors": ["red", "yellow", "blue"]}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "Give me a JSON object with keys name, age and city for Ada Lovelace, 36, from London.",
            {"name": "Ada Lovelace", "age": 36, "city": "London"},
        ),
        (
            "Reply in JSON with fields `ok` (whether it worked) and `ideas` (three project ideas).",
            {"ok": True, "ideas": ["idea 1", "idea 2", "idea 3"]},
        ),
        ("List three colors as JSON", {"colors": ["red", "green", "blue"]}),
        (
            'Return JSON with a "planets" key listing the planets.',
            {"planets": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]},
        ),
    ],
)
def test_json_mode_reads_keys_and_their_descriptions(
    client: httpx2.Client, prompt: str, expected: dict[str, Any]
) -> None:
    assert ask_json(client, prompt) == expected


def test_json_mode_without_named_keys_answers_in_one_key(client: httpx2.Client) -> None:
    value = ask_json(client, "Summarize FloTorch in one line.")
    assert list(value) == ["answer"] and value["answer"].startswith("FloTorch is an LLM gateway")


# -- structured output --------------------------------------------------------------------------------

RECIPE = _object(dish=STRING, minutes=INTEGER, ingredients=STRINGS)
MOVIE = _object(
    title={"type": "string", "description": "The film's original title"},
    year={"type": "integer", "description": "Year of first release"},
    genres={"type": "array", "items": STRING, "description": "One to three genres, lowercase"},
    rating={"type": "number", "description": "Your rating from 0 to 10"},
)
PERSON = _object(name=STRING, role=STRING)
CREW = _object(
    film=STRING,
    people={"type": "array", "items": PERSON},
    budget_musd={"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
)


def test_a_recipe_has_a_dish_name_and_a_realistic_time(client: httpx2.Client) -> None:
    recipe = ask_schema(client, "A quick pasta dish for a weeknight.", RECIPE)
    assert recipe["dish"] == "Spaghetti aglio e olio"
    assert 10 <= recipe["minutes"] <= 45
    assert "spaghetti" in recipe["ingredients"] and "weeknight" not in recipe["ingredients"]


def test_a_film_is_a_real_film(client: httpx2.Client) -> None:
    movie = ask_schema(client, "Describe a classic science-fiction film.", MOVIE)
    assert movie["title"] == "2001: A Space Odyssey" and movie["year"] == 1968
    assert "science fiction" in movie["genres"] and 0 <= movie["rating"] <= 10
    crew = ask_schema(client, "List the director and lead actors of a well-known film.", CREW)
    assert crew["film"] == "Casablanca"
    names = [person["name"] for person in crew["people"]]
    assert names[0] == "Michael Curtiz" and "Humphrey Bogart" in names and "List" not in names
    assert crew["people"][0]["role"] == "director"


def test_facts_in_the_prompt_still_win_over_the_example(client: httpx2.Client) -> None:
    recipe = ask_schema(client, 'A pasta dish called "Cacio e pepe", ready in 15 minutes.', RECIPE)
    assert recipe["dish"] == "Cacio e pepe" and recipe["minutes"] == 15


def test_an_example_value_that_does_not_fit_the_schema_is_not_used(client: httpx2.Client) -> None:
    schema = _object(title={"type": "string", "maxLength": 10}, year={"type": "integer", "minimum": 2000})
    value = ask_schema(client, "Describe a classic science-fiction film.", schema)
    assert len(value["title"]) <= 10 and value["year"] >= 2000


def test_numbers_without_a_source_are_plausible_for_their_name(client: httpx2.Client) -> None:
    value = ask_schema(client, "Plan a workout.", _object(minutes=INTEGER, servings=INTEGER, pages=INTEGER))
    assert value == {"minutes": 30, "servings": 4, "pages": 300}


# -- lists and steps ----------------------------------------------------------------------------------


def test_steps_to_make_tea_are_grammatical_and_about_tea(client: httpx2.Client) -> None:
    text = ask(client, "List three steps to make tea.")
    intro, _, body = text.partition("\n\n")
    assert intro == "Here are three steps to make tea:"
    steps = body.splitlines()
    assert [s[:3] for s in steps] == ["1. ", "2. ", "3. "]
    assert "water" in steps[0].lower() and "tea" in steps[1].lower()


def test_general_steps_read_as_sentences(client: httpx2.Client) -> None:
    text = ask(client, "Give me 3 steps to deploy a web app")
    assert text.startswith("Here are three steps to deploy a web app:")
    assert "for deploy" not in text and "“" not in text
    assert "general steps" in text.lower()  # honest about not knowing


def test_list_ten_facts_about_the_ocean_gives_ten_facts(client: httpx2.Client) -> None:
    text = ask(client, "List ten facts about the ocean.")
    facts = [line for line in text.splitlines() if line.startswith("- ")]
    assert text.startswith("Here are ten facts about the ocean:") and len(facts) == 10
    assert all(fact.endswith(".") for fact in facts)


# -- exact answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What is 2 + 2?", "2 + 2 = 4."),
        ("What is 4 + 4?", "4 + 4 = 8."),
        ("Calculate (3 + 4) * 2", "(3 + 4) * 2 = 14."),
        ("Give one fun fact about the number 7.", "7 is a prime number"),
        ("Give one fun fact about the number 6.", "6 is a perfect number: its divisors 1 + 2 + 3 add up"),
    ],
)
def test_arithmetic_and_number_facts_are_exact(client: httpx2.Client, prompt: str, expected: str) -> None:
    assert ask(client, prompt).startswith(expected)


def test_eight_number_questions_get_eight_different_answers(client: httpx2.Client) -> None:
    answers = {ask(client, f"Give one fun fact about the number {n}.") for n in range(1, 9)}
    assert len(answers) == 8 and all(re.match(r"\d is ", a) for a in answers)


# -- conversation -------------------------------------------------------------------------------------


def test_it_says_which_model_it_is(client: httpx2.Client) -> None:
    text = ask(client, "In one sentence: which model are you, and who made you?")
    assert text.startswith("I am offline/assistant") and "model made" not in text


def test_a_follow_up_example_is_about_the_earlier_topic(client: httpx2.Client) -> None:
    first = "What is a token, in language models?"
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": ask(client, first)},
        {"role": "user", "content": "Can you give me an example?"},
    ]
    text = ask(client, messages)
    assert text.startswith("For example") and "token" in text


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Explain in two sentences what a Jupyter magic command is.", "A Jupyter magic command is"),
        ("What does a low temperature change in an answer?", "A low temperature makes a model"),
        ("Explain in three sentences why streaming helps users.", "Streaming shows an answer"),
        ("In two sentences, explain vector databases to a high-school student.", "A vector database"),
    ],
)
def test_the_notebooks_questions_get_real_answers(client: httpx2.Client, prompt: str, expected: str) -> None:
    assert ask(client, prompt).startswith(expected)


def test_a_pirate_greeting_in_one_sentence_is_a_whole_sentence(client: httpx2.Client) -> None:
    messages = [
        {"role": "system", "content": "You are a pirate. Answer in one sentence."},
        {"role": "user", "content": "Hello! How are you today?"},
    ]
    text = ask(client, messages)
    assert text.startswith("Arr! Ahoy, I'm doing well, thank ye for asking!")


@pytest.mark.parametrize("model", ["offline/assistant", "offline/concise"])
@pytest.mark.parametrize("question", ["Why is the sky blue?", "Why do cats purr?"])
def test_a_short_answer_answers_instead_of_repeating_the_question(
    client: httpx2.Client, model: str, question: str
) -> None:
    """Finding 13: notebook 03's panel ("Keep answers short") answered "Why is the sky blue? (offline
    answer)": the shortening kept the first sentence, which was the question."""
    messages = [
        {"role": "system", "content": "Keep answers short."},
        {"role": "user", "content": question},
    ]
    body = {"model": model, "messages": messages}
    content = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert not content.lower().startswith(question.rstrip("?").lower()), content
    assert len(content.split()) >= 10, content
    if "sky" in question:
        assert "scatter" in content, "a question with a known answer gets it"


def _reask(problems: str) -> dict[str, str]:
    """The client's own re-ask turn: a copy of its wording here would pass after the client's changed."""
    return reask_message(StructuredOutputError("invalid", content="{}", problems=problems))


def test_a_validation_reask_is_answered_from_the_question_with_the_fix_it_names(
    client: httpx2.Client,
) -> None:
    """The client's re-ask (``_recover.reask_message``) was answered from its own words alone: the
    question's facts were lost ("JSON" became the name). Now the question is answered again, and a
    value the errors state (only 12 left) wins over the question's."""
    contact = _object(name={"type": "string"}, email={"type": "string"}, city={"type": "string"})
    question = "Extract the contact: Ada Lovelace, ada@example.com, lives in London."
    first = ask_schema(client, question, contact)
    assert first == {"name": "Ada Lovelace", "email": "ada@example.com", "city": "London"}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": contact, "strict": True}}
    again = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "{}"},
        _reask("email: Field required"),
    ]
    assert json.loads(ask(client, again, response_format=fmt)) == first
    order = _object(item={"type": "string", "enum": ["croissant", "eclair"]}, quantity={"type": "integer"})
    fmt = {"type": "json_schema", "json_schema": {"name": "Order", "schema": order, "strict": True}}
    fixed = [
        {"role": "user", "content": "Order 20 units of eclair for the office."},
        {"role": "assistant", "content": '{"item": "eclair", "quantity": 20}'},
        _reask("quantity: Value error, only 12 left in stock"),
    ]
    assert json.loads(ask(client, fixed, response_format=fmt)) == {"item": "eclair", "quantity": 12}
