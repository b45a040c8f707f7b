namespace VirtioSharp.Block.Nbd;

/// <summary>
/// Where an NBD export is (NBD uri.md): <c>nbd://HOST[:PORT]/EXPORT</c> over TCP (port 10809 by
/// default) or <c>nbd+unix:///EXPORT?socket=PATH</c> over a Unix socket. The export name is the
/// path after the first slash, percent-decoded; an empty name is the server's default export.
/// </summary>
public sealed record NbdUri(string? Host, int Port, string? SocketPath, string Export)
{
    public const int DefaultPort = 10809;

    public bool IsUnix => SocketPath != null;

    public static bool LooksLikeNbd(string text) =>
        text.StartsWith("nbd:", StringComparison.OrdinalIgnoreCase) || text.StartsWith("nbd+", StringComparison.OrdinalIgnoreCase)
        || text.StartsWith("nbds", StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses <paramref name="text"/>; throws <see cref="FormatException"/> with one clear line when it is not an NBD URI we can use.</summary>
    public static NbdUri Parse(string text)
    {
        var schemeEnd = text.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0)
            throw new FormatException($"'{text}' is not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)");
        var scheme = text[..schemeEnd].ToLowerInvariant();
        if (scheme is "nbds" or "nbds+unix")
            throw new FormatException($"'{text}': NBD over TLS ({scheme}) is not supported; use nbd:// or nbd+unix://");
        if (scheme is not ("nbd" or "nbd+tcp" or "nbd+unix"))
            throw new FormatException($"'{text}': unknown scheme '{scheme}' (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)");
        var rest = text[(schemeEnd + 3)..];
        string? query = null;
        var q = rest.IndexOf('?');
        if (q >= 0)
        {
            query = rest[(q + 1)..];
            rest = rest[..q];
        }
        var hash = rest.IndexOf('#');
        if (hash >= 0)
            rest = rest[..hash];
        var slash = rest.IndexOf('/');
        var authority = slash < 0 ? rest : rest[..slash];
        var export = slash < 0 ? "" : Decode(rest[(slash + 1)..], text);
        if (System.Text.Encoding.UTF8.GetByteCount(export) > 4096)
            throw new FormatException($"'{text}': the export name is longer than 4096 bytes");

        string? socket = null;
        foreach (var pair in (query ?? "").Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=');
            var key = eq < 0 ? pair : pair[..eq];
            var value = eq < 0 ? "" : Decode(pair[(eq + 1)..], text);
            if (key == "socket")
                socket = value;
            else if (key.StartsWith("tls", StringComparison.Ordinal))
                throw new FormatException($"'{text}': TLS parameters ('{key}') are not supported");
            // uri.md: other query parameters may be ignored.
        }

        if (scheme == "nbd+unix")
        {
            if (authority.Length != 0)
                throw new FormatException($"'{text}': nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)");
            if (string.IsNullOrEmpty(socket))
                throw new FormatException($"'{text}': nbd+unix:// needs ?socket=PATH");
            return new NbdUri(null, 0, socket, export);
        }
        if (socket != null)
            throw new FormatException($"'{text}': ?socket= belongs to nbd+unix:// URIs");
        if (authority.Contains('@'))
            throw new FormatException($"'{text}': user names in NBD URIs are not supported");
        string host;
        var port = DefaultPort;
        if (authority.StartsWith('['))
        {
            var close = authority.IndexOf(']');
            if (close < 0)
                throw new FormatException($"'{text}': unclosed '[' in the host");
            host = authority[1..close];
            var after = authority[(close + 1)..];
            if (after.Length > 0 && (after[0] != ':' || !TryPort(after[1..], out port)))
                throw new FormatException($"'{text}': bad port '{after.TrimStart(':')}'");
        }
        else
        {
            var colon = authority.LastIndexOf(':');
            host = colon < 0 ? authority : authority[..colon];
            if (colon >= 0 && !TryPort(authority[(colon + 1)..], out port))
                throw new FormatException($"'{text}': bad port '{authority[(colon + 1)..]}' (1..65535)");
        }
        if (host.Length == 0)
            throw new FormatException($"'{text}': no host (nbd://HOST[:PORT]/EXPORT)");
        return new NbdUri(host, port, null, export);
    }

    private static bool TryPort(string s, out int port) =>
        int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) && port is >= 1 and <= 65535;

    private static string Decode(string s, string whole)
    {
        try
        {
            return Uri.UnescapeDataString(s);
        }
        catch (UriFormatException)
        {
            throw new FormatException($"'{whole}': bad percent-encoding in '{s}'");
        }
    }

    public override string ToString() => IsUnix
        ? $"nbd+unix:///{Export}?socket={SocketPath}"
        : $"nbd://{(Host!.Contains(':') ? $"[{Host}]" : Host)}:{Port}/{Export}";
}
