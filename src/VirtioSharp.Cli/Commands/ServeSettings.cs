using System.Globalization;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Cli.Commands;

/// <summary>Everything <c>vblk serve</c> was asked to do.</summary>
public sealed record ServeSettings(string? Image, string? Socket, bool ReadOnly, int NumQueues, int QueueSize, uint BlkSize,
    string Serial, string Backend, string? Size, StrictMode Strict, bool Verbose, AioMode Aio = AioMode.Auto,
    int NbdConnections = 1, double NbdTimeout = 30, BlkLimits? Limits = null, int PollUs = ServeCommand.DefaultPollUs, string? Metrics = null,
    string? Record = null, int RecordLimit = 200)
{
    /// <summary>How to reach Ceph for an rbd: IMAGE (ReadOnly comes from the settings' own flag).</summary>
    public RbdOptions Ceph { get; init; } = new();

    /// <summary>--cache: how a file image uses the page cache; null when not given (writeback for a file, refused for other backends).</summary>
    public FileCacheMode? Cache { get; init; }

    /// <summary>Offer VIRTIO_F_RING_PACKED (2.8); --no-packed turns it off.</summary>
    public bool OfferPacked { get; init; } = true;

    /// <summary>--queue-cpus as given (for example "0,1"): queue i's worker is pinned to entry i mod count; null: not pinned.</summary>
    public string? QueueCpus { get; init; }

    /// <summary>Testing only (--debug-hold-completions-ms): hold each completion this long.</summary>
    public int HoldCompletionsMs { get; init; }

    /// <summary>The start-up line about limits, polling and metrics.</summary>
    public string DescribeControls()
    {
        var parts = new List<string>();
        if (Limits is { } l)
        {
            static string Rate(double? v, string unit) => v is { } x ? string.Create(CultureInfo.InvariantCulture, $"{x:0.###} {unit}") : "";
            var rates = new[]
            {
                l.IopsTotal is null ? "" : $"{Rate(l.IopsTotal, "requests/s")}", l.IopsRead is null ? "" : $"reads {Rate(l.IopsRead, "requests/s")}",
                l.IopsWrite is null ? "" : $"writes {Rate(l.IopsWrite, "requests/s")}", l.BpsTotal is null ? "" : $"{Rate(l.BpsTotal, "bytes/s")}",
                l.BpsRead is null ? "" : $"reads {Rate(l.BpsRead, "bytes/s")}", l.BpsWrite is null ? "" : $"writes {Rate(l.BpsWrite, "bytes/s")}",
            }.Where(r => r.Length > 0);
            parts.Add($"limits: {string.Join(", ", rates)} (requests beyond them wait in the ring)");
        }
        parts.Add(PollUs > 0 ? $"queue workers poll up to {PollUs} us before sleeping" : "queue workers sleep at once (no polling)");
        if (QueueCpus is not null)
            parts.Add($"queue workers pinned to CPUs {QueueCpus} (queue i on entry i mod count)");
        if (Metrics is not null)
            parts.Add($"metrics at http://{Metrics}/metrics");
        return string.Join("; ", parts);
    }
}
