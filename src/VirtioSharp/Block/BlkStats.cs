namespace VirtioSharp.Block;

/// <summary>Request counters of one device, by type and outcome. Updated with interlocked adds.</summary>
public sealed class BlkStats
{
    private readonly long[] _byType = new long[16];
    private long _bytesRead, _bytesWritten, _ioErr, _unsupp, _malformed;

    internal void Count(uint type, BlkStatus status, ulong bytes)
    {
        Interlocked.Increment(ref _byType[type < 15 ? type : 15]);
        switch (status)
        {
            case BlkStatus.IoErr: Interlocked.Increment(ref _ioErr); break;
            case BlkStatus.Unsupp: Interlocked.Increment(ref _unsupp); break;
            default:
                if (type == (uint)BlkRequestType.In) Interlocked.Add(ref _bytesRead, (long)bytes);
                else if (type == (uint)BlkRequestType.Out) Interlocked.Add(ref _bytesWritten, (long)bytes);
                break;
        }
    }

    internal void CountMalformed() => Interlocked.Increment(ref _malformed);

    public long Requests(BlkRequestType type) => Interlocked.Read(ref _byType[(int)type]);
    public long BytesRead => Interlocked.Read(ref _bytesRead);
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);
    public long IoErrors => Interlocked.Read(ref _ioErr);
    public long Unsupported => Interlocked.Read(ref _unsupp);
    public long Malformed => Interlocked.Read(ref _malformed);
    public long Total { get { long t = 0; for (var i = 0; i < _byType.Length; i++) t += Interlocked.Read(ref _byType[i]); return t; } }
}
