namespace VirtioSharp.Rbd;

/// <summary>Which image to serve: <c>rbd:POOL/IMAGE[@SNAP]</c>.</summary>
public sealed record RbdImageSpec(string Pool, string Image, string? Snapshot)
{
    public const string Prefix = "rbd:";

    public static bool Matches(string text) => text.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>Parses <c>rbd:POOL/IMAGE[@SNAP]</c>; an <see cref="ArgumentException"/> with one clear line when it is malformed.</summary>
    public static RbdImageSpec Parse(string text)
    {
        if (!Matches(text))
            throw new ArgumentException($"'{text}' is not an RBD image (expected rbd:POOL/IMAGE[@SNAP])");
        var rest = text[Prefix.Length..];
        var slash = rest.IndexOf('/');
        if (slash <= 0)
            throw new ArgumentException($"'{text}' names no pool (expected rbd:POOL/IMAGE[@SNAP])");
        var pool = rest[..slash];
        var image = rest[(slash + 1)..];
        string? snapshot = null;
        var at = image.IndexOf('@');
        if (at >= 0)
        {
            snapshot = image[(at + 1)..];
            image = image[..at];
            if (snapshot.Length == 0 || snapshot.Contains('@') || snapshot.Contains('/'))
                throw new ArgumentException($"'{text}' has an empty or malformed snapshot name after '@'");
        }
        if (image.Length == 0 || image.Contains('/'))
            throw new ArgumentException($"'{text}' names no image, or more than one '/' (expected rbd:POOL/IMAGE[@SNAP])");
        foreach (var part in new[] { pool, image, snapshot ?? "" })
            if (part.Any(c => char.IsControl(c)))
                throw new ArgumentException($"'{text}' holds a control character");
        return new RbdImageSpec(pool, image, snapshot);
    }

    public override string ToString() => Snapshot is null ? $"{Pool}/{Image}" : $"{Pool}/{Image}@{Snapshot}";
}
