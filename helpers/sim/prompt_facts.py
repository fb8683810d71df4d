"""Values a trained model would copy from the prompt into a structured reply: names, cities,
dates, numbers, list items. Small, table-driven heuristics for Chinese and English prompts.

Rules (each returns None / nothing when the prompt has no such span):
- person name: a quoted name after "named/called/叫/名为" ("a customer named '你好啊集团'"); after
  "我叫/名叫/叫做/姓名" or "my name is/named/I am"; else a 2-3 character
  Chinese name starting with a common surname at the start of a clause ("张三, 28 岁");
  else a capitalised English name opening the prompt ("Alice Smith, 30" / "Alice is 30").
- city: a city from `_CITIES` mentioned in the prompt; else English "in/at/for/near <Capitalised
  Words>" ("weather in San Francisco"); else 2-3 Chinese characters before 市/的天气/天气/今天/明天/现在.
- country: a country from `_COUNTRIES` mentioned in the prompt.
- date: an ISO date, or a Chinese date 2024年3月5日 (as ISO); email, URL, phone: the first match.
- numbers: every number in reading order (ASCII digits, not part of a word such as "Qwen3";
  a Chinese numeral before a measure word such as 五星 / 三个 counts too); dates are skipped.
- list items: the first run of two or more terms joined by 和/与/及/、/,/and/or
  ("会 Python 和 SQL" gives ["Python", "SQL"]).
- enum values: a value mentioned in the prompt, or one whose synonyms in `_ENUM_SYNONYMS` are
  (正面/好评 -> positive, ...); the value with most mentions wins, ties go to schema order.

Example:
    >>> facts = PromptFacts("张三, 28 岁, 会 Python 和 SQL。")
    >>> facts.person_name, facts.numbers, facts.list_items
    ('张三', [28], ['Python', 'SQL'])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from helpers.sim.tokens import is_chinese

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
    "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
    "武戴莫孔向汤"
)
_CITIES = (
    "北京", "上海", "广州", "深圳", "杭州", "成都", "南京", "武汉", "西安", "重庆", "天津", "苏州",
    "长沙", "郑州", "青岛", "厦门", "大连", "沈阳", "哈尔滨", "昆明", "香港", "澳门", "台北",
    "东京", "大阪", "首尔", "纽约", "伦敦", "巴黎", "柏林", "悉尼", "新加坡", "旧金山", "洛杉矶",
    "Beijing", "Shanghai", "Guangzhou", "Shenzhen", "Hangzhou", "Chengdu", "Hong Kong", "Tokyo",
    "Seoul", "Singapore", "New York", "San Francisco", "Los Angeles", "Seattle", "Chicago",
    "Boston", "London", "Paris", "Berlin", "Madrid", "Rome", "Sydney", "Toronto",
)  # fmt: skip
_COUNTRIES = (
    "中国", "美国", "日本", "韩国", "英国", "法国", "德国", "意大利", "西班牙", "加拿大", "澳大利亚",
    "俄罗斯", "印度", "新加坡", "China", "United States", "USA", "Japan", "Korea", "United Kingdom",
    "UK", "France", "Germany", "Italy", "Spain", "Canada", "Australia", "Russia", "India",
)  # fmt: skip
_ENUM_SYNONYMS: dict[str, tuple[str, ...]] = {
    "positive": ("正面", "好评", "积极", "好用", "喜欢", "满意", "推荐", "五星", "great", "good",
                 "love", "excellent", "amazing"),
    "negative": ("负面", "差评", "消极", "难用", "讨厌", "失望", "不满", "一星", "terrible", "bad",
                 "awful", "hate", "poor"),
    "neutral": ("中性", "一般", "还行", "中立", "okay", "average"),
    "celsius": ("摄氏", "°C", "℃"),
    "fahrenheit": ("华氏", "°F", "℉"),
    "high": ("高", "紧急", "urgent"),
    "low": ("低",),
    "yes": ("是的", "对"),
    "no": ("不是", "没有"),
}  # fmt: skip
_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9, "十": 10}  # fmt: skip
_CN_MEASURE = "星个次天年月岁本位人分件条只名张"

_NAME_INTRO = re.compile(
    rf"(?:我叫|名叫|叫做|姓名[:：]?)\s*([{_CJK}]{{2,3}}?)(?=[\s,，。;；!！、]|今年|是|$)"
)
_NAME_CJK = re.compile(
    rf"(?:^|[\s,，。;；:：、])([{_SURNAMES}][{_CJK}]{{1,2}}?)(?=[\s,，。;；:：、]|今年|是|$)"
)
_NAME_QUOTED = re.compile(r"(?i:named|called|name is|叫做?|名为)\s*['\"“‘「]([^'\"”’」]{1,40})['\"”’」]")
_NAME_EN_INTRO = re.compile(
    r"(?i:my name is|name is|named|i am|i'm|this is)\s+([A-Z][a-z]+(?: [A-Z][a-z]+)?)"
)
_NAME_EN_LEAD = re.compile(r"^\s*([A-Z][a-z]+(?: [A-Z][a-z]+)?)(?:,| (?:is|was|has|works|lives)\b)")
_CITY_EN = re.compile(r"\b(?:in|at|for|near|to|from)\s+([A-Z][a-zA-Z]+(?: [A-Z][a-zA-Z]+)*)")
_CITY_ZH = re.compile(rf"([{_CJK}]{{2,3}}?)(?:市|的天气|天气|今天|明天|现在)")
_QUOTED = re.compile(r"'([^'\s]{1,40})'|\"([^\"\s]{1,40})\"|`([^`\s]{1,40})`|“([^”\s]{1,40})”")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_ZH_DATE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})[日号]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL = re.compile(r"https?://[^\s，。\"'<>]+")
_PHONE = re.compile(r"(?<!\d)(?:\+?\d{1,3}[- ]?)?1\d{10}(?!\d)|(?<!\d)\d{3}-\d{3,4}-\d{4}(?!\d)")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(-?)(\d+(?:\.\d+)?)(?![A-Za-z_]|\.\d)")
_CN_NUMBER = re.compile(rf"([零一二两三四五六七八九十])(?=[{_CN_MEASURE}])")
_CAPITALISED = r"[A-Z](?:[\w+#.-]*[\w+#])?(?: [A-Z](?:[\w+#.-]*[\w+#])?)*"
_JOIN_ANY = r"\s*(?:和|与|及|以及|、|,|，|\band\b|\bor\b)\s*"
_JOIN_ZH = r"\s*(?:和|与|及|以及|、)\s*"
_JOIN_EN = r"(?:,\s*|\s+and\s+|\s+or\s+)"
# Tried in order: capitalised terms ("Python 和 SQL", "Go, Rust and Python"), two-character
# Chinese words joined by 和/与/及/、 ("苹果和香蕉"), lower-case words ("apples, pears and plums").
_LISTS = (
    (re.compile(rf"{_CAPITALISED}(?:{_JOIN_ANY}{_CAPITALISED})+"), re.compile(_JOIN_ANY)),
    (re.compile(rf"[{_CJK}]{{2}}(?:{_JOIN_ZH}[{_CJK}]{{2}})+"), re.compile(_JOIN_ZH)),
    (re.compile(rf"\b[a-z]+(?:{_JOIN_EN}[a-z]+\b)+"), re.compile(_JOIN_EN)),
)
# Capitalised words that open a sentence without being a name.
_NOT_NAMES = frozenset(
    ("What", "Who", "How", "Why", "When", "Where", "Which", "This", "That", "There", "Here", "It",
     "Please", "Tell", "Give", "Use", "Call", "Find", "Get", "Show", "Return", "The", "Is", "Can")
)  # fmt: skip


@dataclass
class PromptFacts:
    """The spans of one prompt that structured values can be taken from (see module docstring)."""

    text: str
    _used_numbers: int = field(default=0, init=False)

    @cached_property
    def chinese(self) -> bool:
        return is_chinese(self.text)

    @cached_property
    def person_name(self) -> str | None:
        for pattern in (_NAME_QUOTED, _NAME_INTRO, _NAME_CJK, _NAME_EN_INTRO, _NAME_EN_LEAD):
            match = pattern.search(self.text)
            if match and match.group(1).split()[0] not in _NOT_NAMES:
                return match.group(1)
        return None

    @cached_property
    def city(self) -> str | None:
        found = _first_mentioned(self.text, _CITIES)
        if found:
            return found
        match = _CITY_EN.search(self.text)
        if match and match.group(1) not in _COUNTRIES:
            return match.group(1)
        match = _CITY_ZH.search(self.text)
        return match.group(1) if match else None

    @cached_property
    def country(self) -> str | None:
        return _first_mentioned(self.text, _COUNTRIES)

    @cached_property
    def date(self) -> str | None:
        """The first date in the prompt as ISO `YYYY-MM-DD` (None when there is none)."""
        for pattern in (_ISO_DATE, _ZH_DATE):
            match = pattern.search(self.text)
            if match:
                year, month, day = (int(part) for part in match.groups())
                if 1 <= month <= 12 and 1 <= day <= 28 + (3 if month != 2 else 1):
                    return f"{year:04d}-{month:02d}-{day:02d}"
        return None

    @cached_property
    def email(self) -> str | None:
        match = _EMAIL.search(self.text)
        return match.group() if match else None

    @cached_property
    def url(self) -> str | None:
        match = _URL.search(self.text)
        return match.group().rstrip(".,;:!?)") if match else None

    @cached_property
    def phone(self) -> str | None:
        match = _PHONE.search(self.text)
        return match.group() if match else None

    @cached_property
    def numbers(self) -> list[int | float]:
        """Every number in reading order (dates, emails and URLs left out)."""
        text = self.text
        for pattern in (_ISO_DATE, _ZH_DATE, _EMAIL, _URL, _PHONE):
            text = pattern.sub(lambda m: " " * len(m.group()), text)
        found: list[tuple[int, int | float]] = []
        for match in _NUMBER.finditer(text):
            sign, digits = match.groups()
            if sign and match.start() > 0 and text[match.start() - 1].isdigit():
                sign = ""
            value: int | float = float(digits) if "." in digits else int(digits)
            found.append((match.start(), -value if sign else value))
        found += [(m.start(), _CN_DIGITS[m.group(1)]) for m in _CN_NUMBER.finditer(text)]
        return [value for _, value in sorted(found, key=lambda item: item[0])]

    @cached_property
    def list_items(self) -> list[str]:
        for pattern, join in _LISTS:
            match = pattern.search(self.text)
            if match:
                return [item for item in join.split(match.group()) if item]
        return []

    @cached_property
    def quoted_keys(self) -> list[str]:
        """Identifier-like words the prompt quotes ('setup', "punchline", `key`, “名字”), in order."""
        keys: list[str] = []
        for match in re.finditer(
            r"'([^'\s]{1,40})'|\"([^\"\s]{1,40})\"|`([^`\s]{1,40})`|“([^”\s]{1,40})”", self.text
        ):
            key = next(group for group in match.groups() if group)
            if re.fullmatch(r"\w+", key) and key not in keys:
                keys.append(key)
        return keys

    def has_unused_number(self) -> bool:
        return self._used_numbers < len(self.numbers)

    def take_number(self, accept: Callable[[int | float], bool]) -> int | float | None:
        """The next unused prompt number that `accept(number)` allows (numbers are used in order)."""
        numbers = self.numbers
        for index in range(self._used_numbers, len(numbers)):
            if accept(numbers[index]):
                self._used_numbers = index + 1
                return numbers[index]
        return None

    def enum_choice(self, values: list) -> object | None:
        """The enum value the prompt mentions most (directly or by a synonym); None if none is."""
        lowered = self.text.lower()
        best, best_score = None, 0
        for value in values:
            if not isinstance(value, str) or not value:
                continue
            score = lowered.count(value.lower())
            score += sum(lowered.count(word.lower()) for word in _ENUM_SYNONYMS.get(value.lower(), ()))
            if score > best_score:
                best, best_score = value, score
        return best


def _first_mentioned(text: str, names: tuple[str, ...]) -> str | None:
    positions = [(text.find(name), -len(name), name) for name in names if name in text]
    return min(positions)[2] if positions else None
