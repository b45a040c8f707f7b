namespace VirtioSharp.Block;

/// <summary>How a file image uses the host's page cache (`vblk serve --cache`, named as QEMU's cache modes).</summary>
public enum FileCacheMode
{
    /// <summary>Buffered I/O through the page cache; FLUSH is fdatasync.</summary>
    Writeback,
    /// <summary>
    /// O_DIRECT: the page cache is bypassed; transfers aligned to the file system's logical block
    /// size go straight between guest memory and the disk, reads and writes alike many in flight per
    /// queue; FLUSH is fdatasync (the disk's own cache).
    /// </summary>
    None,
    /// <summary>Buffered I/O like <see cref="Writeback"/>, and FLUSH is acknowledged without fdatasync: a host crash may lose data the guest was told is stable.</summary>
    Unsafe,
}

/// <summary>Parsing and naming of <see cref="FileCacheMode"/> as the command line spells it.</summary>
public static class FileCacheModes
{
    public static string Name(FileCacheMode mode) => mode switch
    {
        FileCacheMode.None => "none",
        FileCacheMode.Unsafe => "unsafe",
        _ => "writeback",
    };

    public static bool TryParse(string text, out FileCacheMode mode)
    {
        switch (text)
        {
            case "writeback": mode = FileCacheMode.Writeback; return true;
            case "none": mode = FileCacheMode.None; return true;
            case "unsafe": mode = FileCacheMode.Unsafe; return true;
            default: mode = FileCacheMode.Writeback; return false;
        }
    }
}
