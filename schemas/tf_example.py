"""tensorflow.Example message classes built with the protobuf runtime alone, without TensorFlow.

Featurize workers only need to serialize Examples; importing TensorFlow for that costs about
3 s and several hundred MiB per worker process. The descriptor below is a transcription of
tensorflow/core/example/{example,feature}.proto, so the bytes are identical to tf.train.Example's
(tests parse them with TensorFlow). It lives in a private descriptor pool, so it never clashes
with TensorFlow's own classes in a process that imports both.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="cattag/tf_example.proto", package="tensorflow", syntax="proto3")
    for name, value_type in (("BytesList", _F.TYPE_BYTES), ("FloatList", _F.TYPE_FLOAT), ("Int64List", _F.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=value_type, label=_F.LABEL_REPEATED)

    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), start=1
    ):
        feature.field.add(name=name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                          type_name=f".tensorflow.{type_name}", oneof_index=0)

    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")

    proto.message_type.add(name="Example").field.add(
        name="features", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=".tensorflow.Features")
    return proto


@functools.cache
def example_class() -> type:
    """The tensorflow.Example message class (cached: the pool is built once per process)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))
