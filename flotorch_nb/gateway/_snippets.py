"""Data: the small runnable Python examples ``offline/assistant`` shows when asked for code.

Each entry is (trigger substrings, function name, source). Sources are complete: they define the
function and call it, so a notebook can run the answer's code block as-is.
"""

from __future__ import annotations

SNIPPETS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("revers",),
        "reverse_text",
        '''def reverse_text(text: str) -> str:
    """Return text backwards."""
    return text[::-1]


print(reverse_text("FloTorch"))''',
    ),
    (
        ("factorial",),
        "factorial",
        '''def factorial(n: int) -> int:
    """Return n! for n >= 0."""
    result = 1
    for k in range(2, n + 1):
        result *= k
    return result


print(factorial(5))''',
    ),
    (
        ("fibonacci",),
        "fibonacci",
        '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    numbers = [0, 1]
    while len(numbers) < n:
        numbers.append(numbers[-1] + numbers[-2])
    return numbers[:n]


print(fibonacci(10))''',
    ),
    (
        ("palindrome",),
        "is_palindrome",
        '''def is_palindrome(text: str) -> bool:
    """True when text reads the same backwards, ignoring case and spaces."""
    cleaned = "".join(ch.lower() for ch in text if ch.isalnum())
    return cleaned == cleaned[::-1]


print(is_palindrome("Never odd or even"))''',
    ),
    (
        ("prime",),
        "is_prime",
        '''def is_prime(n: int) -> bool:
    """True when n is a prime number."""
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


print([n for n in range(20) if is_prime(n)])''',
    ),
    (
        ("sort",),
        "sort_numbers",
        '''def sort_numbers(numbers: list[float]) -> list[float]:
    """Return the numbers in ascending order."""
    return sorted(numbers)


print(sort_numbers([3, 1, 2]))''',
    ),
    (
        ("celsius", "fahrenheit", "temperature"),
        "celsius_to_fahrenheit",
        '''def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 32


print(celsius_to_fahrenheit(21))''',
    ),
    (
        ("count word", "word count", "count the word", "count words"),
        "count_words",
        '''def count_words(text: str) -> int:
    """Return the number of whitespace-separated words."""
    return len(text.split())


print(count_words("the quick brown fox"))''',
    ),
    (
        ("sum", "add", "total"),
        "add_numbers",
        '''def add_numbers(numbers: list[float]) -> float:
    """Return the sum of the numbers."""
    return sum(numbers)


print(add_numbers([1, 2, 3]))''',
    ),
)


def generic_snippet(name: str, topic: str) -> str:
    """A runnable example for a topic with no dedicated snippet."""
    return f'''def {name}(detail: str = "basics") -> str:
    """Return a one-line note about {topic}."""
    return f"{{detail}} of {topic}"


print({name}())'''
