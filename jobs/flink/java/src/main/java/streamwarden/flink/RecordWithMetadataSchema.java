package streamwarden.flink;

import java.nio.ByteBuffer;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * A Kafka record as one {@code byte[]}: a fixed big-endian header, the key, then the value, each
 * byte for byte. The header is {@code >BBiqqi}: layout version (1), flags (bit 0: null key, bit 1:
 * null value), partition, offset, timestamp (ms), key length. The Python decode stage splits it
 * ({@code jobs/flink/decode.py: split_record}), so dead letters can name the record's partition
 * and offset and carry its key. Nothing is parsed here: a poison record is the Python side's to
 * judge, and no record can fail the source.
 */
public final class RecordWithMetadataSchema implements KafkaRecordDeserializationSchema<byte[]> {
  private static final long serialVersionUID = 1L;

  public static final byte LAYOUT_VERSION = 1;
  public static final int HEADER_BYTES = 1 + 1 + 4 + 8 + 8 + 4;
  public static final byte NULL_KEY = 1;
  public static final byte NULL_VALUE = 2;

  @Override
  public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
    byte[] key = record.key();
    byte[] value = record.value();
    int keyLength = key == null ? 0 : key.length;
    int valueLength = value == null ? 0 : value.length;
    byte flags = (byte) ((key == null ? NULL_KEY : 0) | (value == null ? NULL_VALUE : 0));
    ByteBuffer buffer = ByteBuffer.allocate(HEADER_BYTES + keyLength + valueLength);
    buffer
        .put(LAYOUT_VERSION)
        .put(flags)
        .putInt(record.partition())
        .putLong(record.offset())
        .putLong(record.timestamp())
        .putInt(keyLength);
    if (key != null) {
      buffer.put(key);
    }
    if (value != null) {
      buffer.put(value);
    }
    out.collect(buffer.array());
  }

  @Override
  public TypeInformation<byte[]> getProducedType() {
    return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
  }
}
