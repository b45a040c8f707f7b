using System.Globalization;

namespace VirtioSharp.Cli;

/// <summary>Parses sizes such as 4096, 64K, 128M, 2G (binary units).</summary>
public static class Sizes
{
    public static ulong Parse(string text, string what)
    {
        var t = text.Trim();
        if (t.Length == 0)
            throw new CliException($"{what} is empty", true);
        ulong unit = 1;
        var last = char.ToUpperInvariant(t[^1]);
        if (last == 'B' && t.Length > 1 && char.IsLetter(t[^2]))
        {
            t = t[..^1];
            last = char.ToUpperInvariant(t[^1]);
        }
        switch (last)
        {
            case 'K': unit = 1UL << 10; t = t[..^1]; break;
            case 'M': unit = 1UL << 20; t = t[..^1]; break;
            case 'G': unit = 1UL << 30; t = t[..^1]; break;
            case 'T': unit = 1UL << 40; t = t[..^1]; break;
        }
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > ulong.MaxValue / unit)
            throw new CliException($"{what} '{text}' is not a size (examples: 4096, 64K, 128M, 2G)", true);
        return n * unit;
    }

    /// <summary>An exact size with a readable unit beside it: "2048000 bytes = 1.95 MiB".</summary>
    public static string Exact(ulong bytes) =>
        bytes < 1024 ? $"{bytes} bytes" : $"{bytes} bytes = {Format(bytes, hundredths: true)}";

    public static string Format(double bytes) => Format(bytes, hundredths: false);

    private static string Format(double bytes, bool hundredths)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        var i = 0;
        while (bytes >= 1024 && i < units.Length - 1)
        {
            bytes /= 1024;
            i++;
        }
        if (i == 0)
            return $"{bytes:0} {units[i]}";
        return hundredths ? $"{bytes:0.##} {units[i]}" : $"{bytes:0.#} {units[i]}";
    }

    /// <summary>Parses "4096", "64K", "512M", "2G" (binary multiples; "KiB"-style and "B" suffixes are accepted too).</summary>
    public static bool TryParse(string text, out ulong bytes)
    {
        bytes = 0;
        var t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal))
            t = t[..^2]; // KiB -> K
        else if (t.EndsWith('B'))
            t = t[..^1]; // KB -> K, 512B -> 512
        var shift = 0;
        if (t.Length > 0)
        {
            shift = t[^1] switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
            if (shift != 0)
                t = t[..^1];
        }
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            return false;
        if (n > ulong.MaxValue >> shift)
            return false;
        bytes = n << shift;
        return true;
    }
}
