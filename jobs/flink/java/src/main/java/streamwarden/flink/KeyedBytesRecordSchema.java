package streamwarden.flink;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.types.Row;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * {@code Row(key bytes, value bytes)} to a Kafka record of one topic, without a record timestamp: the
 * producer stamps it with the time it is written. The connector's own schemas pass the element's
 * Flink timestamp on, which in this job is the event time of the input event: a broker rejects a
 * whole batch whose timestamps lie outside its {@code log.message.timestamp.before/after.max.ms}
 * window (Kafka 4 allows at most one hour ahead by default), so one event stamped in the future made
 * every retry of the sink fail and the job restart in a loop. The event time stays in the payload.
 */
public final class KeyedBytesRecordSchema implements KafkaRecordSerializationSchema<Row> {
  private static final long serialVersionUID = 1L;

  private final String topic;

  public KeyedBytesRecordSchema(String topic) {
    this.topic = topic;
  }

  @Override
  public ProducerRecord<byte[], byte[]> serialize(
      Row element, KafkaSinkContext context, Long timestamp) {
    byte[] key = (byte[]) element.getField(0);
    byte[] value = (byte[]) element.getField(1);
    return new ProducerRecord<>(topic, null, null, key == null ? new byte[0] : key, value);
  }
}
