namespace VirtioSharp.Native;

/// <summary>A list of CPU numbers as the command line gives it (<c>0,1</c> or <c>0-3</c>), for pinning queue threads.</summary>
public static class CpuList
{
    /// <summary>
    /// Parses <paramref name="text"/>; every CPU must be one this machine has
    /// (below <paramref name="cpus"/>). A mistake is an <see cref="ArgumentException"/> with one line.
    /// </summary>
    public static int[] Parse(string text, string option, int cpus)
    {
        var list = new List<int>();
        foreach (var part in text.Split(','))
        {
            var dash = part.IndexOf('-');
            if (!(dash < 0 ? TryCpu(part, out var first) && TryCpu(part, out var last)
                    : TryCpu(part[..dash], out first) && TryCpu(part[(dash + 1)..], out last)) || last < first)
                throw new ArgumentException($"{option} '{text}' is not a list of CPU numbers such as 0,1 or 0-3");
            for (var c = first; c <= last; c++)
            {
                if (c >= cpus)
                    throw new ArgumentException($"{option}: CPU {c} does not exist (this machine has CPUs 0..{cpus - 1})");
                list.Add(c);
            }
        }
        return [.. list];
    }

    private static bool TryCpu(string text, out int cpu) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out cpu) && cpu < 1024;

    /// <summary>The CPU of queue <paramref name="queue"/>: the list's entries in turn; -1 without a list.</summary>
    public static int ForQueue(IReadOnlyList<int>? cpus, int queue) => cpus is { Count: > 0 } ? cpus[queue % cpus.Count] : -1;
}
