namespace VirtioSharp.Block;

/// <summary>
/// Limits for one disk, as QEMU's throttle groups and Firecracker's rate limiter set them:
/// requests per second and bytes per second, each for reads, writes and both together. A null
/// limit is no limit. A burst of 0 is a tenth of a second of the rate.
/// </summary>
public sealed record BlkLimits
{
    public double? IopsTotal { get; init; }
    public double? IopsRead { get; init; }
    public double? IopsWrite { get; init; }
    public double? BpsTotal { get; init; }
    public double? BpsRead { get; init; }
    public double? BpsWrite { get; init; }
    /// <summary>Requests that may pass at once on top of each requests-per-second limit.</summary>
    public double IopsBurst { get; init; }
    /// <summary>Bytes that may pass at once on top of each bytes-per-second limit.</summary>
    public double BpsBurst { get; init; }

    public bool Any => IopsTotal.HasValue || IopsRead.HasValue || IopsWrite.HasValue || BpsTotal.HasValue || BpsRead.HasValue || BpsWrite.HasValue;
}
