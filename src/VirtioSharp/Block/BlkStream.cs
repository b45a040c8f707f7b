namespace VirtioSharp.Block;

/// <summary>
/// A seekable stream over a virtio-blk disk. Unaligned reads and writes are turned into whole
/// sectors (read-modify-write at the edges).
/// </summary>
public sealed class BlkStream(BlkDriver driver) : Stream
{
    private long _position;

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => !driver.ReadOnly;
    public override long Length => (long)driver.Capacity;

    public override long Position
    {
        get => _position;
        set => _position = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value));
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        Position = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => Length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        return _position;
    }

    public override void SetLength(long value) => throw new NotSupportedException("a virtio-blk disk has a fixed capacity");

    public override void Flush() => FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

    public override Task FlushAsync(CancellationToken cancellationToken) => driver.FlushAsync(cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var remaining = Length - _position;
        if (remaining <= 0 || buffer.IsEmpty)
            return 0;
        var count = (int)Math.Min(buffer.Length, remaining);
        const int S = BlkLayout.SectorSize;
        var start = _position / S * S;
        var end = (_position + count + S - 1) / S * S;
        if (start == _position && end == _position + count)
            await driver.ReadAsync((ulong)start, buffer[..count], cancellationToken);
        else
        {
            var temp = new byte[end - start];
            await driver.ReadAsync((ulong)start, temp, cancellationToken);
            temp.AsMemory((int)(_position - start), count).CopyTo(buffer);
        }
        _position += count;
        return count;
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position + buffer.Length > Length)
            throw new IOException($"write of {buffer.Length} bytes at {_position} runs past the end of the {Length}-byte disk");
        const int S = BlkLayout.SectorSize;
        var start = _position / S * S;
        var end = (_position + buffer.Length + S - 1) / S * S;
        if (start == _position && end == _position + buffer.Length)
            await driver.WriteAsync((ulong)start, buffer, cancellationToken);
        else
        {
            var temp = new byte[end - start];
            await driver.ReadAsync((ulong)start, temp, cancellationToken);
            buffer.CopyTo(temp.AsMemory((int)(_position - start)));
            await driver.WriteAsync((ulong)start, temp, cancellationToken);
        }
        _position += buffer.Length;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
}
