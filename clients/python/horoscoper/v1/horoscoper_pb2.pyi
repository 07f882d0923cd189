import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Batching(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCHING_UNSPECIFIED: _ClassVar[Batching]
    BATCHING_STATIC: _ClassVar[Batching]
    BATCHING_CONTINUOUS: _ClassVar[Batching]
BATCHING_UNSPECIFIED: Batching
BATCHING_STATIC: Batching
BATCHING_CONTINUOUS: Batching

class InferRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("text", "last", "batch")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    text: str
    last: bool
    batch: BatchInfo
    def __init__(self, text: _Optional[str] = ..., last: _Optional[bool] = ..., batch: _Optional[_Union[BatchInfo, _Mapping]] = ...) -> None: ...

class BatchInfo(_message.Message):
    __slots__ = ("batch_id", "batch_size", "worker_id", "queue_time", "max_shared", "batching")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_SHARED_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    batch_size: int
    worker_id: str
    queue_time: _duration_pb2.Duration
    max_shared: int
    batching: Batching
    def __init__(self, batch_id: _Optional[int] = ..., batch_size: _Optional[int] = ..., worker_id: _Optional[str] = ..., queue_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_shared: _Optional[int] = ..., batching: _Optional[_Union[Batching, str]] = ...) -> None: ...
