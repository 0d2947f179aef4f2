"""connexion's validators with one-line details that name the field or parameter and what is
wrong, never the value sent; a body must be UTF-8 JSON (RFC 8259: no NaN or Infinity), not nested
deeper than limits.MAX_JSON_DEPTH, with no number longer than limits.MAX_JSON_DIGITS."""
import json

from connexion.exceptions import BadRequestProblem, ExtraParameterProblem
from connexion.utils import is_null, is_nullable
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match

from cloudmesh.transfer import limits

SHOWN_NAME = 40  # characters of a client's field name that a detail repeats


def shown(name) -> str:
    """A client's field or parameter name, quoted, its control characters escaped, cut short."""
    text = str(name)
    return repr(text if len(text) <= SHOWN_NAME else text[:SHOWN_NAME] + "...")


TYPES = {"integer": "a whole number", "number": "a number", "string": "a string", "boolean": "true or false",
         "array": "an array", "object": "an object", "null": "null"}
RULES = {"minimum": "must be at least {}", "maximum": "must be at most {}",
         "minLength": "must have at least {} characters", "maxLength": "must have at most {} characters",
         "minItems": "must have at least {} items", "maxItems": "must have at most {} items",
         "pattern": "must match {}", "format": "must be a {}"}


def explain(error: ValidationError, subject: str | None = None) -> str:
    """What a schema refused, as one line naming the field (or `subject`) and the rule."""
    if subject is None:
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        subject = f"field {shown(path.lstrip('.'))}" if path else "the request body"
    rule, value = error.validator, error.validator_value
    if rule == "required":
        missing = next(name for name in value if name not in error.instance)
        return f"{subject} needs field {shown(missing)}" if error.absolute_path else \
            f"field {shown(missing)} is required"
    if rule == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        return f"unknown field {shown(unknown[0])} in {subject}; the fields are {', '.join(known)}"
    if rule == "type":
        names = [value] if isinstance(value, str) else value
        wrong = "must be " + " or ".join(TYPES.get(name, name) for name in names)
    elif rule == "enum":
        wrong = "must be one of " + ", ".join(str(choice) for choice in value)
    elif rule == "minLength" and value == 1:
        wrong = "must not be empty"
    else:
        wrong = RULES[rule].format(value) if rule in RULES else f"is not valid ({rule})"
    return f"{subject} {wrong}"


def json_constant(name: str):
    raise BadRequestProblem(detail=f"the request body holds {name}, which JSON does not allow")


def json_integer(text: str) -> int:
    """A whole number of the body, refused before Python's int-string limit ends in a ValueError."""
    if len(text.lstrip("-")) > limits.MAX_JSON_DIGITS:
        raise BadRequestProblem(detail=f"the request body holds a number of more than {limits.MAX_JSON_DIGITS} digits")
    return int(text)


def nested_deeper(value, depth: int) -> bool:
    """Whether objects and arrays nest more than `depth` levels in `value` (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            if level > depth:
                return True
            pending.extend((child, level + 1) for child in children)
    return False


class BodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validator with one-line details: the body is UTF-8 JSON (RFC 8259,
    so no NaN or Infinity), not nested deeper than limits.MAX_JSON_DEPTH, and fits the schema."""

    async def _parse(self, stream, scope):
        data = b"".join([message async for message in stream])
        if not data:
            return None
        too_deep = f"the request body nests objects or arrays more than {limits.MAX_JSON_DEPTH} levels deep"
        try:
            body = json.loads(data.decode("utf-8"), parse_constant=json_constant, parse_int=json_integer)
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="the request body is not UTF-8") from None
        except json.JSONDecodeError as e:
            raise BadRequestProblem(detail=f"the request body is not JSON: {e}") from None
        except RecursionError:
            raise BadRequestProblem(detail=too_deep) from None
        if nested_deeper(body, limits.MAX_JSON_DEPTH):
            raise BadRequestProblem(detail=too_deep)
        return body

    def _validate(self, body):
        if body is None and not self._nullable:
            raise BadRequestProblem(detail="the request body must be an object")
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            raise BadRequestProblem(detail=explain(error))


class ParameterCheck(ParameterValidator):
    """connexion's parameter validator with one-line details that name the parameter."""

    @staticmethod
    def validate_parameter(parameter_type, value, param, param_name=None):
        if value is None or (is_nullable(param) and is_null(value)):
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        schema = param.get("schema", param)
        error = best_match(Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).iter_errors(value))
        return explain(error, f"{parameter_type} parameter {shown(param['name'])}") if error else None

    def validate_request(self, request):
        try:
            super().validate_request(request)
        except ExtraParameterProblem:
            unknown = sorted(self.validate_query_parameter_list(request, self.security_query_params))
            known = [p["name"] for p in self.parameters.get("query", [])]
            raise BadRequestProblem(detail=f"unknown query parameter {shown(unknown[0])}; "
                                           f"the parameters are {', '.join(known) or 'none'}") from None
