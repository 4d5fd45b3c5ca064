package streamwarden.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * {@code byte[]} to {@code Row(key, bytes)} with one fixed key, in Java: the fused layout keys every
 * record to its single Python operator this way, so no Python key-extraction operator runs before it
 * (it would share the TaskManager's interpreter with the fused operator).
 */
public final class ConstantKeyRow implements MapFunction<byte[], Row> {
  private static final long serialVersionUID = 1L;

  private final String key;

  public ConstantKeyRow(String key) {
    this.key = key;
  }

  @Override
  public Row map(byte[] value) {
    return Row.of(key, value);
  }
}
