using System.CommandLine;
using System.Globalization;
using VirtioSharp.Block;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk serve</c>'s limits per disk (--iops-limit, --bps-limit and their read, write and burst
/// variants), read into <see cref="BlkLimits"/>. A bad value is an <see cref="ArgumentException"/>
/// with one line that names the option.
/// </summary>
internal sealed class ServeLimitOptions
{
    private readonly Option<string?> _iops = Make("--iops-limit", "Requests per second, reads and writes together (a limited disk delays requests, never fails them)");
    private readonly Option<string?> _iopsRead = Make("--iops-read-limit", "Read requests per second");
    private readonly Option<string?> _iopsWrite = Make("--iops-write-limit", "Write requests per second (discard and write-zeroes count as writes)");
    private readonly Option<string?> _bps = Make("--bps-limit", "Bytes per second, read and written together (K, M, G suffixes)");
    private readonly Option<string?> _bpsRead = Make("--bps-read-limit", "Bytes read per second (K, M, G suffixes)");
    private readonly Option<string?> _bpsWrite = Make("--bps-write-limit", "Bytes written per second (K, M, G suffixes)");
    private readonly Option<string?> _iopsBurst = Make("--iops-burst", "Requests that may pass at once on top of each requests-per-second limit (default: a tenth of a second's worth)");
    private readonly Option<string?> _bpsBurst = Make("--bps-burst", "Bytes that may pass at once on top of each bytes-per-second limit (default: a tenth of a second's worth)");

    private static Option<string?> Make(string name, string description) => new(name) { Description = description };

    public IEnumerable<Option> All => [_iops, _iopsRead, _iopsWrite, _bps, _bpsRead, _bpsWrite, _iopsBurst, _bpsBurst];

    /// <summary>The limits given, or null when none was.</summary>
    public BlkLimits? Parse(ParseResult result)
    {
        var limits = new BlkLimits
        {
            IopsTotal = Rate(result, _iops, bytes: false),
            IopsRead = Rate(result, _iopsRead, bytes: false),
            IopsWrite = Rate(result, _iopsWrite, bytes: false),
            BpsTotal = Rate(result, _bps, bytes: true),
            BpsRead = Rate(result, _bpsRead, bytes: true),
            BpsWrite = Rate(result, _bpsWrite, bytes: true),
            IopsBurst = Rate(result, _iopsBurst, bytes: false) ?? 0,
            BpsBurst = Rate(result, _bpsBurst, bytes: true) ?? 0,
        };
        if (!limits.Any)
        {
            if (limits.IopsBurst != 0 || limits.BpsBurst != 0)
                throw new ArgumentException("--iops-burst and --bps-burst go with a limit (--iops-limit, --bps-limit or a read or write variant)");
            return null;
        }
        return limits;
    }

    private static double? Rate(ParseResult result, Option<string?> option, bool bytes)
    {
        if (result.GetValue(option) is not { } text)
            return null;
        double value;
        if (bytes)
            value = Sizes.TryParse(text, out var n) ? n : double.NaN;
        else
            value = double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var d) ? d : double.NaN;
        if (!(value > 0) || double.IsInfinity(value) || value > 1e15)
            throw new ArgumentException(bytes
                ? $"{option.Name} '{text}' must be a positive number of bytes (with an optional K, M, G or T suffix)"
                : $"{option.Name} '{text}' must be a positive number of requests");
        return value;
    }
}
