"""Problem codes of the mapping resources (contract part 2, "Mappings as resources")."""

from __future__ import annotations

from shared.domain.errors import ServiceError


class PreconditionFailedError(ServiceError):
    code, status, title = "precondition_failed", 412, "The mapping changed since it was read"


class InvalidFilterError(ServiceError):
    code, status, title = "invalid_filter", 422, "The filter is refused by the service it is for"


class InvalidMappingError(ServiceError):
    code, status, title = "invalid_mapping", 422, "The change does not make a valid mapping"


class UnknownFieldError(ServiceError):
    code, status, title = "unknown_field", 422, "Unknown field"


class TypeMismatchError(ServiceError):
    code, status, title = "type_mismatch", 422, "The field types do not convert"


class ReadOnlyFieldError(ServiceError):
    code, status, title = "read_only_field", 422, "The target field is read-only"


class FieldAlreadyMappedError(ServiceError):
    code, status, title = "field_already_mapped", 409, "The target field is already mapped"


class FieldNotFoundError(ServiceError):
    code, status, title = "field_not_found", 404, "Unknown field mapping"


class NotUserDefinedError(ServiceError):
    code, status, title = "not_user_defined", 409, "A shipped mapping or field mapping cannot be deleted"


class MappingExistsError(ServiceError):
    code, status, title = "mapping_exists", 409, "A mapping with this name exists"


class UnknownEntityError(ServiceError):
    code, status, title = "unknown_entity", 422, "Unknown entity"


class NotShippedError(ServiceError):
    code, status, title = "not_shipped", 409, "A user-defined mapping has no shipped settings to reset to"


BY_CODE: dict[str, type[ServiceError]] = {
    cls.code: cls for cls in (UnknownFieldError, TypeMismatchError, ReadOnlyFieldError, FieldAlreadyMappedError)
}
