"""The DSA Transparency Database's statement schema: field names, allowed values and field rules.

Taken from the Database's own API documentation and validation code (API v2 values, in force since
1 July 2025):
- https://transparency.dsa.ec.europa.eu/page/api-documentation (fields, formats, the batch endpoint
  ``POST /api/v1/statements`` with ``{"statements": [...]}``, at most 100 per call, PUID characters)
- https://transparency.dsa.ec.europa.eu/page/additional-explanation-for-statement-attributes
- github.com/digital-services-act/transparency-database ``app/Http/Requests/StatementsStoreRequest.php``
  (required / required-if rules, lengths, date formats and ranges) and the ``dsa-tdb`` package's
  enumerations (v2 categories and keywords).

``validate_statement`` applies those rules to one API payload (a dict) and returns every problem as
``field: message``; nothing here knows about actions or policies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

DECISION_VISIBILITY = (
    "DECISION_VISIBILITY_CONTENT_REMOVED",
    "DECISION_VISIBILITY_CONTENT_DISABLED",
    "DECISION_VISIBILITY_CONTENT_DEMOTED",
    "DECISION_VISIBILITY_CONTENT_AGE_RESTRICTED",
    "DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED",
    "DECISION_VISIBILITY_CONTENT_LABELLED",
    "DECISION_VISIBILITY_OTHER",
)
DECISION_MONETARY = (
    "DECISION_MONETARY_SUSPENSION",
    "DECISION_MONETARY_TERMINATION",
    "DECISION_MONETARY_OTHER",
)
DECISION_PROVISION = (
    "DECISION_PROVISION_PARTIAL_SUSPENSION",
    "DECISION_PROVISION_TOTAL_SUSPENSION",
    "DECISION_PROVISION_PARTIAL_TERMINATION",
    "DECISION_PROVISION_TOTAL_TERMINATION",
)
DECISION_ACCOUNT = ("DECISION_ACCOUNT_SUSPENDED", "DECISION_ACCOUNT_TERMINATED")
ACCOUNT_TYPE = ("ACCOUNT_TYPE_BUSINESS", "ACCOUNT_TYPE_PRIVATE")
DECISION_GROUND = ("DECISION_GROUND_ILLEGAL_CONTENT", "DECISION_GROUND_INCOMPATIBLE_CONTENT")
ILLEGAL = "DECISION_GROUND_ILLEGAL_CONTENT"
INCOMPATIBLE = "DECISION_GROUND_INCOMPATIBLE_CONTENT"
YES_NO = ("Yes", "No")
CONTENT_TYPE = (
    "CONTENT_TYPE_APP",
    "CONTENT_TYPE_AUDIO",
    "CONTENT_TYPE_IMAGE",
    "CONTENT_TYPE_PRODUCT",
    "CONTENT_TYPE_SYNTHETIC_MEDIA",
    "CONTENT_TYPE_TEXT",
    "CONTENT_TYPE_VIDEO",
    "CONTENT_TYPE_OTHER",
)
CATEGORY = (
    "STATEMENT_CATEGORY_ANIMAL_WELFARE",
    "STATEMENT_CATEGORY_CONSUMER_INFORMATION",
    "STATEMENT_CATEGORY_CYBER_VIOLENCE",
    "STATEMENT_CATEGORY_CYBER_VIOLENCE_AGAINST_WOMEN",
    "STATEMENT_CATEGORY_DATA_PROTECTION_AND_PRIVACY_VIOLATIONS",
    "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "STATEMENT_CATEGORY_INTELLECTUAL_PROPERTY_INFRINGEMENTS",
    "STATEMENT_CATEGORY_NEGATIVE_EFFECTS_ON_CIVIC_DISCOURSE_OR_ELECTIONS",
    "STATEMENT_CATEGORY_NOT_SPECIFIED_NOTICE",
    "STATEMENT_CATEGORY_OTHER_VIOLATION_TC",
    "STATEMENT_CATEGORY_PROTECTION_OF_MINORS",
    "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
    "STATEMENT_CATEGORY_SCAMS_AND_FRAUD",
    "STATEMENT_CATEGORY_SELF_HARM",
    "STATEMENT_CATEGORY_UNSAFE_AND_PROHIBITED_PRODUCTS",
    "STATEMENT_CATEGORY_VIOLENCE",
)
KEYWORD = (
    "KEYWORD_ANIMAL_HARM", "KEYWORD_UNLAWFUL_SALE_ANIMALS",
    "KEYWORD_HIDDEN_ADVERTISEMENT", "KEYWORD_INSUFFICIENT_INFORMATION_ON_TRADERS",
    "KEYWORD_MISLEADING_INFO_CONSUMER_RIGHTS", "KEYWORD_MISLEADING_INFO_GOODS_SERVICES",
    "KEYWORD_NONCOMPLIANCE_PRICING",
    "KEYWORD_CYBER_BULLYING_INTIMIDATION", "KEYWORD_CYBER_HARASSMENT", "KEYWORD_CYBER_INCITEMENT",
    "KEYWORD_CYBER_STALKING", "KEYWORD_NON_CONSENSUAL_IMAGE_SHARING", "KEYWORD_NON_CONSENSUAL_MATERIAL_DEEPFAKE",
    "KEYWORD_BULLYING_AGAINST_GIRLS", "KEYWORD_CYBER_HARASSMENT_AGAINST_WOMEN",
    "KEYWORD_CYBER_STALKING_AGAINST_WOMEN", "KEYWORD_FEMALE_GENDERED_DISINFORMATION",
    "KEYWORD_INCITEMENT_AGAINST_WOMEN", "KEYWORD_NON_CONSENSUAL_IMAGE_SHARING_AGAINST_WOMEN",
    "KEYWORD_NON_CONSENSUAL_MATERIAL_DEEPFAKE_AGAINST_WOMEN",
    "KEYWORD_BIOMETRIC_DATA_BREACH", "KEYWORD_MISSING_PROCESSING_GROUND", "KEYWORD_RIGHT_TO_BE_FORGOTTEN",
    "KEYWORD_DATA_FALSIFICATION",
    "KEYWORD_DEFAMATION", "KEYWORD_DISCRIMINATION", "KEYWORD_HATE_SPEECH",
    "KEYWORD_COPYRIGHT_INFRINGEMENT", "KEYWORD_DESIGN_INFRINGEMENT", "KEYWORD_GEOGRAPHIC_INDICATIONS_INFRINGEMENT",
    "KEYWORD_PATENT_INFRINGEMENT", "KEYWORD_TRADE_SECRET_INFRINGEMENT", "KEYWORD_TRADEMARK_INFRINGEMENT",
    "KEYWORD_MISINFORMATION_DISINFORMATION", "KEYWORD_VIOLATION_EU_LAW", "KEYWORD_VIOLATION_NATIONAL_LAW",
    "KEYWORD_ONLINE_BULLYING_INTIMIDATION", "KEYWORD_STALKING", "KEYWORD_ADULT_SEXUAL_MATERIAL",
    "KEYWORD_AGE_SPECIFIC_RESTRICTIONS_MINORS", "KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL",
    "KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL_DEEPFAKE", "KEYWORD_GROOMING_SEXUAL_ENTICEMENT_MINORS",
    "KEYWORD_UNSAFE_CHALLENGES",
    "KEYWORD_ILLEGAL_ORGANIZATIONS", "KEYWORD_RISK_ENVIRONMENTAL_DAMAGE", "KEYWORD_RISK_PUBLIC_HEALTH",
    "KEYWORD_TERRORIST_CONTENT",
    "KEYWORD_INAUTHENTIC_ACCOUNTS", "KEYWORD_INAUTHENTIC_LISTINGS", "KEYWORD_INAUTHENTIC_USER_REVIEWS",
    "KEYWORD_IMPERSONATION_ACCOUNT_HIJACKING", "KEYWORD_PHISHING", "KEYWORD_PYRAMID_SCHEMES",
    "KEYWORD_CONTENT_PROMOTING_EATING_DISORDERS", "KEYWORD_SELF_MUTILATION", "KEYWORD_SUICIDE",
    "KEYWORD_AGE_SPECIFIC_RESTRICTIONS", "KEYWORD_GEOGRAPHICAL_REQUIREMENTS",
    "KEYWORD_GOODS_SERVICES_NOT_PERMITTED", "KEYWORD_LANGUAGE_REQUIREMENTS", "KEYWORD_NUDITY",
    "KEYWORD_PROHIBITED_PRODUCTS", "KEYWORD_UNSAFE_PRODUCTS",
    "KEYWORD_COORDINATED_HARM", "KEYWORD_HUMAN_EXPLOITATION", "KEYWORD_HUMAN_TRAFFICKING",
    "KEYWORD_INCITEMENT_VIOLENCE_HATRED", "KEYWORD_TRAFFICKING_WOMEN_GIRLS",
    "KEYWORD_OTHER",
)  # fmt: skip
SOURCE_TYPE = (
    "SOURCE_ARTICLE_16",
    "SOURCE_TRUSTED_FLAGGER",
    "SOURCE_TYPE_OTHER_NOTIFICATION",
    "SOURCE_VOLUNTARY",
)
AUTOMATED_DECISION = (
    "AUTOMATED_DECISION_FULLY",
    "AUTOMATED_DECISION_PARTIALLY",
    "AUTOMATED_DECISION_NOT_AUTOMATED",
)
EU_COUNTRIES = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
)  # fmt: skip
EEA_COUNTRIES = (*EU_COUNTRIES, "IS", "LI", "NO")

MAX_BATCH = 100
"""Statements per call of the multiple-statements endpoint."""

LIMITS: dict[str, int] = {
    "decision_visibility_other": 500,
    "decision_monetary_other": 500,
    "decision_ground_reference_url": 500,
    "illegal_content_legal_ground": 500,
    "illegal_content_explanation": 2000,
    "incompatible_content_ground": 500,
    "incompatible_content_explanation": 2000,
    "content_type_other": 500,
    "category_specification_other": 500,
    "decision_facts": 5000,
    "source_identity": 500,
    "puid": 500,
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PUID = re.compile(r"^[A-Za-z0-9_-]+$")
_LANG = re.compile(r"^[A-Z]{2}$")
_URL = re.compile(r"^https?://[^\s/$.?#].[^\s]*$")

# (field, earliest, latest) for the dates the API checks; end dates must also not precede application_date.
_DATE_RANGES = {
    "content_date": (date(2000, 1, 1), date(2038, 1, 1)),
    "application_date": (date(2020, 1, 1), date(2038, 1, 1)),
    "end_date_visibility_restriction": (None, date(2038, 1, 1)),
    "end_date_monetary_restriction": (None, date(2038, 1, 1)),
    "end_date_service_restriction": (None, date(2038, 1, 1)),
    "end_date_account_restriction": (None, date(2038, 1, 1)),
}


def _present(value: Any) -> bool:
    return value not in (None, "", [])


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def validate_statement(s: Mapping[str, Any]) -> list[str]:
    """Every way ``s`` breaks the API's field rules, as ``field: message`` (empty = valid)."""
    errs: list[str] = []

    def one_of(name: str, allowed: tuple[str, ...], required: bool = False) -> None:
        v = s.get(name)
        if not _present(v):
            if required:
                errs.append(f"{name}: required")
            return
        if v not in allowed:
            errs.append(f"{name}: {v!r} is not one of the allowed values")

    def many_of(name: str, allowed: tuple[str, ...], required: bool = False) -> None:
        v = s.get(name)
        if not _present(v):
            if required:
                errs.append(f"{name}: required (a non-empty array)")
            return
        if not isinstance(v, list):
            errs.append(f"{name}: must be an array")
            return
        bad = [x for x in v if x not in allowed]
        if bad:
            errs.append(f"{name}: {bad} not among the allowed values")
        if len(set(v)) != len(v):
            errs.append(f"{name}: repeated values")

    def required_iff(name: str, needed: bool, what: str) -> None:
        if needed and not _present(s.get(name)):
            errs.append(f"{name}: required when {what}")
        elif not needed and _present(s.get(name)):
            errs.append(f"{name}: only allowed when {what}")

    decisions = ("decision_visibility", "decision_monetary", "decision_provision", "decision_account")
    if not any(_present(s.get(d)) for d in decisions):
        errs.append("decision_visibility: at least one of " + ", ".join(decisions) + " is required")
    many_of("decision_visibility", DECISION_VISIBILITY)
    vis = s.get("decision_visibility") or []
    required_iff(
        "decision_visibility_other",
        isinstance(vis, list) and "DECISION_VISIBILITY_OTHER" in vis,
        "decision_visibility holds DECISION_VISIBILITY_OTHER",
    )
    one_of("decision_monetary", DECISION_MONETARY)
    required_iff(
        "decision_monetary_other",
        s.get("decision_monetary") == "DECISION_MONETARY_OTHER",
        "decision_monetary is DECISION_MONETARY_OTHER",
    )
    one_of("decision_provision", DECISION_PROVISION)
    one_of("decision_account", DECISION_ACCOUNT)
    one_of("account_type", ACCOUNT_TYPE)

    one_of("decision_ground", DECISION_GROUND, required=True)
    ground = s.get("decision_ground")
    for name in ("illegal_content_legal_ground", "illegal_content_explanation"):
        required_iff(name, ground == ILLEGAL, f"decision_ground is {ILLEGAL}")
    for name in ("incompatible_content_ground", "incompatible_content_explanation"):
        required_iff(name, ground == INCOMPATIBLE, f"decision_ground is {INCOMPATIBLE}")
    if _present(s.get("incompatible_content_illegal")):
        if ground != INCOMPATIBLE:
            errs.append(f"incompatible_content_illegal: only allowed when decision_ground is {INCOMPATIBLE}")
        one_of("incompatible_content_illegal", YES_NO)
    url = s.get("decision_ground_reference_url")
    if _present(url) and not (isinstance(url, str) and _URL.match(url)):
        errs.append("decision_ground_reference_url: not a valid URL")

    many_of("content_type", CONTENT_TYPE, required=True)
    ctype = s.get("content_type") or []
    required_iff(
        "content_type_other",
        isinstance(ctype, list) and "CONTENT_TYPE_OTHER" in ctype,
        "content_type holds CONTENT_TYPE_OTHER",
    )
    one_of("category", CATEGORY, required=True)
    many_of("category_addition", CATEGORY)
    many_of("category_specification", KEYWORD)
    many_of("territorial_scope", EEA_COUNTRIES, required=True)
    lang = s.get("content_language")
    if _present(lang) and not (isinstance(lang, str) and _LANG.match(lang)):
        errs.append("content_language: must be an upper-case ISO 639-1 code")

    app_date = _parse_date(s.get("application_date"))
    for name, (lo, hi) in _DATE_RANGES.items():
        v = s.get(name)
        if not _present(v):
            if name in ("content_date", "application_date"):
                errs.append(f"{name}: required")
            continue
        d = _parse_date(v)
        if d is None:
            errs.append(f"{name}: {v!r} does not match the format YYYY-MM-DD")
            continue
        if lo is not None and d < lo:
            errs.append(f"{name}: must be on or after {lo.isoformat()}")
        if d > hi:
            errs.append(f"{name}: must be on or before {hi.isoformat()}")
        if name.startswith("end_date_") and app_date is not None and d < app_date:
            errs.append(f"{name}: must be on or after application_date")

    if not _present(s.get("decision_facts")):
        errs.append("decision_facts: required")
    one_of("source_type", SOURCE_TYPE, required=True)
    one_of("automated_detection", YES_NO, required=True)
    one_of("automated_decision", AUTOMATED_DECISION, required=True)
    puid = s.get("puid")
    if not _present(puid):
        errs.append("puid: required")
    elif not (isinstance(puid, str) and _PUID.match(puid)):
        errs.append("puid: only letters, digits, '-' and '_' are allowed")

    for name, limit in LIMITS.items():
        v = s.get(name)
        if isinstance(v, str) and len(v) > limit:
            errs.append(f"{name}: longer than {limit} characters ({len(v)})")
    return errs


def validate_batch(body: Mapping[str, Any]) -> list[str]:
    """The problems of one multiple-statements request body, each prefixed ``statement_<i>.`` as the API
    indexes them; the body itself must be ``{"statements": [1..100 statements]}``."""
    items = body.get("statements")
    if set(body) != {"statements"} or not isinstance(items, list):
        return ['body: must be {"statements": [...]}']
    if not 1 <= len(items) <= MAX_BATCH:
        return [f"statements: {len(items)} statements; a call takes 1 to {MAX_BATCH}"]
    out: list[str] = []
    puids: set[str] = set()
    for i, item in enumerate(items):
        out += [f"statement_{i}.{e}" for e in validate_statement(item)]
        p = item.get("puid")
        if isinstance(p, str):
            if p in puids:
                out.append(f"statement_{i}.puid: repeated in the batch")
            puids.add(p)
    return out
