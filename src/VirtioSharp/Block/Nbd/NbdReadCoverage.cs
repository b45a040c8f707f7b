namespace VirtioSharp.Block.Nbd;

/// <summary>
/// Which bytes of one read the server's content chunks have described so far, to hold the server
/// to proto.md ("Structured reply chunk message", NBD_CMD_READ): content chunks lie inside the
/// request, MUST NOT overlap an earlier content chunk, and together cover the whole request before
/// a success. Kept as sorted, disjoint, non-adjacent pieces in fixed arrays (no allocation per
/// request): chunks in order, as servers send them, stay one piece. A reply scattered into more
/// than <see cref="MaxPieces"/> separate pieces at once is refused. Receiver thread only.
/// </summary>
internal sealed class NbdReadCoverage
{
    public const int MaxPieces = 16;
    private readonly uint[] _start = new uint[MaxPieces];
    private readonly uint[] _end = new uint[MaxPieces]; // exclusive
    private int _count;

    public enum Result
    {
        Added,
        /// <summary>The chunk overlaps bytes an earlier chunk described.</summary>
        Overlap,
        /// <summary>The chunk would be a separate piece beyond <see cref="MaxPieces"/>.</summary>
        TooScattered,
    }

    public void Reset() => _count = 0;

    /// <summary>
    /// Records [<paramref name="at"/>, <paramref name="at"/> + <paramref name="size"/>) of the
    /// request. The caller has checked that it lies inside the request (so the end does not wrap).
    /// </summary>
    public Result Add(uint at, uint size)
    {
        var end = at + size;
        var i = _count;
        // In order (the usual case): the chunk starts at or after the last piece's end.
        if (i == 0 || _end[i - 1] <= at)
        {
            if (i > 0 && _end[i - 1] == at)
            {
                _end[i - 1] = end;
                return Result.Added;
            }
        }
        else
        {
            // The first piece that ends after the chunk starts: it must also start at or after the chunk's end.
            i = 0;
            while (_end[i] <= at)
                i++;
            if (_start[i] < end)
                return Result.Overlap;
            var left = i > 0 && _end[i - 1] == at;
            var right = _start[i] == end;
            if (left && right)
            {
                _end[i - 1] = _end[i];
                Remove(i);
                return Result.Added;
            }
            if (left)
            {
                _end[i - 1] = end;
                return Result.Added;
            }
            if (right)
            {
                _start[i] = at;
                return Result.Added;
            }
        }
        if (_count == MaxPieces)
            return Result.TooScattered;
        Array.Copy(_start, i, _start, i + 1, _count - i);
        Array.Copy(_end, i, _end, i + 1, _count - i);
        _start[i] = at;
        _end[i] = end;
        _count++;
        return Result.Added;
    }

    private void Remove(int i)
    {
        Array.Copy(_start, i + 1, _start, i, _count - i - 1);
        Array.Copy(_end, i + 1, _end, i, _count - i - 1);
        _count--;
    }

    /// <summary>Whether the chunks so far describe exactly the <paramref name="length"/> bytes of the request.</summary>
    public bool Covers(uint length) => length == 0 ? _count == 0 : _count == 1 && _start[0] == 0 && _end[0] == length;
}
