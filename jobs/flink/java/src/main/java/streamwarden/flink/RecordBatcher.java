package streamwarden.flink;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Packs consecutive {@code byte[]} records into one {@code Row(key, batch)} for the fused layout's
 * Python operator, so it is called once per batch instead of once per record (each call into the
 * embedded interpreter costs about as much as the pipeline's own work for a record). A batch is
 * emitted when it holds {@code maxRecords}, {@code maxDelayMs} after its first record (processing
 * time), before every checkpoint barrier and at the end of input, so a checkpoint never holds a
 * record the operator has buffered: the batcher keeps no state and exactly-once is unchanged.
 *
 * <p>The batch emitted before a barrier (and at the end of input) is flagged, even when it holds no
 * record: the Python operator keeps its state in memory and writes what changed to Flink state only
 * on a flagged batch, so each checkpoint holds exactly its memory, written once per interval.
 *
 * <p>Batch layout: the number of records (int32, big-endian), a flags byte (bit 0: a barrier
 * follows), then per record its length (int32) and bytes ({@code jobs/flink/fused.py: split_batch}).
 */
public final class RecordBatcher extends AbstractStreamOperator<Row>
    implements OneInputStreamOperator<byte[], Row>, BoundedOneInput, ProcessingTimeCallback {
  private static final long serialVersionUID = 1L;

  /** Flags bit 0: a checkpoint barrier (or the end of input) follows this batch. */
  public static final int FLAG_BARRIER = 1;

  private final String key;
  private final int maxRecords;
  private final long maxDelayMs;
  private transient List<byte[]> buffer;
  private transient long bytes;
  private transient long timerAt;

  public RecordBatcher(String key, int maxRecords, long maxDelayMs) {
    if (maxRecords < 1 || maxDelayMs < 1) {
      throw new IllegalArgumentException("maxRecords and maxDelayMs must be >= 1");
    }
    this.key = key;
    this.maxRecords = maxRecords;
    this.maxDelayMs = maxDelayMs;
  }

  @Override
  public void open() throws Exception {
    super.open();
    buffer = new ArrayList<>(maxRecords);
    bytes = 0;
    timerAt = -1;
  }

  @Override
  public void processElement(StreamRecord<byte[]> element) {
    byte[] value = element.getValue();
    buffer.add(value);
    bytes += 4 + value.length;
    if (buffer.size() >= maxRecords) {
      emit(false);
    } else if (buffer.size() == 1 && timerAt < 0) {
      long now = getProcessingTimeService().getCurrentProcessingTime();
      timerAt = now + maxDelayMs;
      getProcessingTimeService().registerTimer(timerAt, this);
    }
  }

  /**
   * A watermark must not overtake the records buffered before it (at the end of a bounded input the
   * source's final watermark arrives before {@code endInput}): emit them first.
   */
  @Override
  public void processWatermark(Watermark mark) throws Exception {
    emit(false);
    super.processWatermark(mark);
  }

  @Override
  public void onProcessingTime(long time) {
    timerAt = -1;
    emit(false);
  }

  @Override
  public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
    super.prepareSnapshotPreBarrier(checkpointId);
    emit(true);
  }

  @Override
  public void endInput() {
    emit(true);
  }

  @Override
  public void finish() throws Exception {
    emit(true);
    super.finish();
  }

  private void emit(boolean barrier) {
    if (buffer.isEmpty() && !barrier) {
      return;
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream((int) Math.min(Integer.MAX_VALUE, 5 + bytes));
    try (DataOutputStream data = new DataOutputStream(out)) {
      data.writeInt(buffer.size());
      data.writeByte(barrier ? FLAG_BARRIER : 0);
      for (byte[] value : buffer) {
        data.writeInt(value.length);
        data.write(value);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    buffer.clear();
    bytes = 0;
    output.collect(new StreamRecord<>(Row.of(key, out.toByteArray())));
  }
}
