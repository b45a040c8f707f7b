namespace VirtioSharp.Block;

/// <summary>A block request that completed with a status other than OK, or could not complete.</summary>
public sealed class BlkException(string message, BlkStatus status = BlkStatus.IoErr) : IOException(message)
{
    public BlkStatus Status { get; } = status;
}
