using System.Globalization;

namespace VirtioSharp.Cli.Frontend;

/// <summary>Byte counts on the command line: plain numbers or with a K, M, G or T suffix (powers of 1024).</summary>
internal static class ByteSize
{
    public static ulong Parse(string text, string what)
    {
        var s = text.Trim();
        if (s.EndsWith("iB", StringComparison.OrdinalIgnoreCase))
            s = s[..^2];
        else if (s.EndsWith('B') || s.EndsWith('b'))
            s = s[..^1];
        var shift = 0;
        if (s.Length > 0)
        {
            shift = char.ToUpperInvariant(s[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
            if (shift != 0)
                s = s[..^1];
        }
        if (!ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            throw new CliException($"{what} '{text}' is not a size (examples: 4096, 4K, 1M, 2G)");
        if (shift != 0 && value > ulong.MaxValue >> shift)
            throw new CliException($"{what} '{text}' is too large");
        return value << shift;
    }

    /// <summary>A short human form: 4K, 1.5M, 16G; plain bytes below 1 KiB.</summary>
    public static string Format(ulong bytes)
    {
        string[] units = ["", "K", "M", "G", "T"];
        double v = bytes;
        var u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? $"{bytes}" : v == Math.Floor(v) ? $"{v:0}{units[u]}" : $"{v:0.##}{units[u]}";
    }
}
